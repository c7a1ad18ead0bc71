// The page of pikfix_jax.app: plain JavaScript over the JSON API of pikfix_jax/app_server.py.
// State lives here (the photo, the chosen references, the palette, the edited mask), so a
// failed upload or run never loses what the user already gave.
'use strict';

const $ = (id) => document.getElementById(id);
const state = {
  info: null,
  photo: null,        // {id, url, name, width, height}
  refs: [],           // chosen references [{id, url, name}]
  palette: [],        // ['#rrggbb', ...]
  maskEdited: false,  // the user painted: send the mask
  dropping: false,    // eyedropper mode
  job: null,
};

function message(text) {
  const m = $('message');
  m.textContent = text || '';
  m.hidden = !text;
}

async function api(path, options) {
  const response = await fetch(path, options);
  let body = {};
  try { body = await response.json(); } catch (e) { body = {error: `HTTP ${response.status}`}; }
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

async function upload(file, kind) {
  const limit = state.info ? state.info.max_upload_bytes : Infinity;
  if (file.size > limit) {  // refused here too, before sending the bytes
    throw new Error(`${file.name}: ${(file.size / 1048576).toFixed(1)} MB is above the upload ` +
                    `limit of ${(limit / 1048576).toFixed(0)} MB (--max_upload_mb)`);
  }
  return api(`/api/upload?kind=${kind}&name=${encodeURIComponent(file.name)}`,
             {method: 'POST', body: file});
}

// ------------------------------------------------------------------------------- photo
async function setPhoto(file) {
  if (!file) return;
  try {
    const photo = await upload(file, 'photo');
    message('');
    state.photo = photo;
    state.maskEdited = false;
    $('photo-img').src = photo.url;
    $('photo-name').textContent = `${photo.name}: ${photo.width} x ${photo.height} px` +
        (photo.grey ? ', grey' : ', colour (its colours are replaced)');
    $('photo-view').hidden = false;
    resetMask();
    $('results').innerHTML = '';
    updateRun();
    if (state.info.corpus_size) rankReferences();
  } catch (e) {
    message(e.message);  // the previous photo, if any, stays
  }
}

async function rankReferences() {
  const box = $('ranked');
  box.innerHTML = '<span class="hint">ranking the folder (the first time builds its index)…</span>';
  try {
    const {references} = await api(`/api/references?photo=${state.photo.id}`);
    box.innerHTML = '';
    for (const r of references) {
      const t = document.createElement('div');
      t.className = 'thumb';
      t.dataset.id = r.id;
      t.title = `${r.name}: retrieval score ${r.score}`;
      t.innerHTML = `<img src="${r.url}" alt="${r.name}"><span class="score">${r.score.toFixed(3)}</span>`;
      t.onclick = () => {
        if (state.dropping) return;
        toggleRef({id: r.id, url: r.url, name: r.name});
      };
      box.appendChild(t);
    }
    markChosen();
  } catch (e) {
    box.innerHTML = '';
    message(e.message);
  }
}

// --------------------------------------------------------------------------- references
function toggleRef(ref) {
  const i = state.refs.findIndex((r) => r.id === ref.id);
  if (i >= 0) state.refs.splice(i, 1); else state.refs.push(ref);
  renderRefs();
}

function markChosen() {
  for (const t of document.querySelectorAll('#ranked .thumb')) {
    t.classList.toggle('chosen', state.refs.some((r) => r.id === t.dataset.id));
  }
}

function renderRefs() {
  const box = $('selected-refs');
  box.innerHTML = '';
  if (!state.refs.length) {
    box.innerHTML = '<span class="hint">none chosen: reference-free methods only</span>';
  }
  for (const r of state.refs) {
    const chip = document.createElement('span');
    chip.className = 'chip';
    chip.innerHTML = `<img src="${r.url}" alt="${r.name}"><span>${r.name}</span>`;
    const x = document.createElement('button');
    x.type = 'button';
    x.textContent = '×';
    x.title = 'remove';
    x.onclick = () => toggleRef(r);
    chip.appendChild(x);
    box.appendChild(chip);
  }
  markChosen();
  updateRun();
}

// ------------------------------------------------------------------------------ palette
function addColour(hex) {
  hex = hex.trim().toLowerCase();
  if (!hex.startsWith('#')) hex = '#' + hex;
  if (/^#[0-9a-f]{3}$/.test(hex)) hex = '#' + [...hex.slice(1)].map((c) => c + c).join('');
  if (!/^#[0-9a-f]{6}$/.test(hex)) { message(`${hex} is not a hex colour (#rrggbb or #rgb)`); return; }
  message('');
  state.palette.push(hex);
  renderPalette();
}

function renderPalette() {
  const box = $('palette');
  box.innerHTML = '';
  state.palette.forEach((hex, i) => {
    const s = document.createElement('span');
    s.className = 'swatch';
    s.style.background = hex;
    s.title = `${hex} (click to remove)`;
    s.onclick = () => { state.palette.splice(i, 1); renderPalette(); };
    box.appendChild(s);
  });
}

function pickColour(img, event) {
  // The clicked pixel of the image at its natural resolution (same-origin images only).
  const rect = img.getBoundingClientRect();
  const x = Math.floor((event.clientX - rect.left) * img.naturalWidth / rect.width);
  const y = Math.floor((event.clientY - rect.top) * img.naturalHeight / rect.height);
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const [r, g, b] = ctx.getImageData(x, y, 1, 1).data;
  return '#' + [r, g, b].map((v) => v.toString(16).padStart(2, '0')).join('');
}

function setDropping(on) {
  state.dropping = on;
  document.body.classList.toggle('dropping', on);
  $('eyedropper').textContent = on ? 'click a picture… (Esc: stop)' : 'eyedropper';
}

document.addEventListener('click', (event) => {
  if (!state.dropping || event.target.tagName !== 'IMG') return;
  event.preventDefault();
  event.stopPropagation();
  addColour(pickColour(event.target, event));
  setDropping(false);
}, true);
document.addEventListener('keydown', (e) => { if (e.key === 'Escape') setDropping(false); });

async function makePalette() {
  if (!state.photo) { message('upload a photo first: the palette takes its lightness'); return; }
  try {
    const ref = await api('/api/palette', {method: 'POST',
        body: JSON.stringify({photo: state.photo.id, colours: state.palette})});
    message('');
    toggleRef({id: ref.id, url: ref.url, name: ref.name});
  } catch (e) { message(e.message); }
}

// --------------------------------------------------------------------------------- mask
const mask = {ctx: null, drawing: false};

function resetMask() {
  const c = $('mask-canvas');
  c.width = state.photo.width; c.height = state.photo.height;
  mask.ctx = c.getContext('2d');
  mask.ctx.fillStyle = 'black';
  mask.ctx.fillRect(0, 0, c.width, c.height);
  const wanted = state.info.methods.some((m) => m.accepts_mask && !m.error);
  $('mask-tools').hidden = !wanted;
  c.hidden = !wanted || !$('mask-show').checked;
}

function loadMask(url) {
  const img = new Image();
  img.onload = () => {
    mask.ctx.drawImage(img, 0, 0, state.photo.width, state.photo.height);
    state.maskEdited = false;  // the detector's: no need to send it back
  };
  img.src = url;
}

function paint(event) {
  const c = $('mask-canvas');
  const rect = c.getBoundingClientRect();
  const scale = c.width / rect.width;
  const size = $('brush-size').value * scale;
  const erase = document.querySelector('input[name=brush]:checked').value === 'erase';
  mask.ctx.fillStyle = erase ? 'black' : 'white';
  mask.ctx.beginPath();
  mask.ctx.arc((event.clientX - rect.left) * scale, (event.clientY - rect.top) * scale,
               size / 2, 0, 2 * Math.PI);
  mask.ctx.fill();
  state.maskEdited = true;
}

// ---------------------------------------------------------------------------------- run
function renderMethods() {
  const box = $('methods');
  box.innerHTML = '';
  const entries = state.info.methods.concat([{id: state.info.tint.id, label: state.info.tint.label,
                                              uses_reference: true, error: ''}]);
  for (const m of entries) {
    const label = document.createElement('label');
    const box_ = document.createElement('input');
    box_.type = 'checkbox';
    box_.value = m.id;
    box_.checked = !m.error;
    box_.disabled = !!m.error;
    label.appendChild(box_);
    label.append(' ' + m.label + (m.error ? ' (not loaded)' : m.uses_reference ? '' : ' (no reference)'));
    if (m.error) {
      const e = document.createElement('div');
      e.className = 'err';
      e.textContent = m.error;
      label.appendChild(e);
    }
    box.appendChild(label);
  }
}

function updateRun() {
  $('run').disabled = !state.photo || (state.job !== null);
}

async function run() {
  const methods = [...document.querySelectorAll('#methods input:checked')].map((i) => i.value);
  const request = {photo: state.photo.id, references: state.refs.map((r) => r.id), methods,
                   mask: state.maskEdited ? $('mask-canvas').toDataURL('image/png') : null,
                   faces: !!state.info.faces && $('faces-on').checked};
  try {
    const {job} = await api('/api/run', {method: 'POST', body: JSON.stringify(request)});
    message('');
    state.job = job;
    updateRun();
    $('results').innerHTML = '';
    $('progress').hidden = false;
    poll();
  } catch (e) { message(e.message); }
}

async function poll() {
  let job;
  try { job = await api(`/api/job?id=${state.job}`); } catch (e) {
    message(e.message); state.job = null; updateRun(); return;
  }
  $('progress').max = job.total;
  $('progress').value = job.done;
  $('status').textContent = job.message;
  renderResults(job.results);
  if (job.state === 'queued' || job.state === 'running') { setTimeout(poll, 250); return; }
  if (job.state === 'error') message(job.message);
  $('progress').hidden = true;
  state.job = null;
  updateRun();
}

function renderResults(results) {
  const box = $('results');
  for (let i = box.children.length; i < results.length; i++) {
    const r = results[i];
    const card = document.createElement('div');
    card.className = 'card';
    card.dataset.method = r.method;
    const h = document.createElement('h3');
    h.textContent = `${r.label} — ${r.seconds.toFixed(2)} s`;
    card.appendChild(h);
    if (r.faces !== undefined) {
      const f = document.createElement('div');
      f.className = 'faces-note';
      f.textContent = `${r.faces} face${r.faces === 1 ? '' : 's'} restored ` +
                      `(${state.info.faces.label}, ${r.face_seconds.toFixed(2)} s of the time)`;
      card.appendChild(f);
    }
    if (r.error) {
      const e = document.createElement('div');
      e.className = 'err';
      e.textContent = r.error;
      card.appendChild(e);
    } else {
      card.innerHTML += `
        <div class="compare"><img class="before" src="${state.photo.url}" alt="before">
          <img class="after result" src="${r.url}" alt="${r.label}"></div>
        <input type="range" min="0" max="100" value="50" aria-label="before/after">
        <div>${r.restored_l_url ? `restored L: <img class="small restored-l" src="${r.restored_l_url}" alt="restored L">` : ''}</div>
        <a class="download" href="${r.url}?download=1&name=${encodeURIComponent(r.download_name)}"
           download="${r.download_name}">download PNG (full resolution)</a>`;
      const after = card.querySelector('.after');
      const slider = card.querySelector('input[type=range]');
      const clip = () => { after.style.clipPath = `inset(0 0 0 ${slider.value}%)`; };
      slider.oninput = clip;
      clip();
      if (r.mask_url && !state.maskEdited) { loadMask(r.mask_url); state.lastMaskUrl = r.mask_url; }
    }
    box.appendChild(card);
  }
}

// -------------------------------------------------------------------------------- start
async function start() {
  try { state.info = await api('/api/info'); } catch (e) { message(e.message); return; }
  renderMethods();
  if (state.info.faces) {  // only when the app was started with a face network
    $('faces-box').hidden = false;
    $('faces-label').textContent = state.info.faces.label;
  }
  if (state.info.corpus_size) {
    $('corpus-box').hidden = false;
    $('corpus-name').textContent = `${state.info.reference_dir} (${state.info.corpus_size} photos)`;
  }
  $('photo-input').onchange = (e) => {
    setPhoto(e.target.files[0]);
    e.target.value = '';  // choosing the same file again reloads it
  };
  const zone = $('drop-zone');
  zone.ondragover = (e) => { e.preventDefault(); zone.classList.add('over'); };
  zone.ondragleave = () => zone.classList.remove('over');
  zone.ondrop = (e) => { e.preventDefault(); zone.classList.remove('over'); setPhoto(e.dataTransfer.files[0]); };
  $('reference-input').onchange = async (e) => {
    for (const file of e.target.files) {
      try { const r = await upload(file, 'reference'); message(''); toggleRef(r); }
      catch (err) { message(err.message); }
    }
    e.target.value = '';
  };
  $('dropper-input').onchange = (e) => {
    const file = e.target.files[0];
    e.target.value = '';
    if (!file) return;
    const img = $('dropper-img');
    img.src = URL.createObjectURL(file);  // shown locally only, to pick colours from
    img.hidden = false;
    setDropping(true);
  };
  $('add-colour').onclick = () => addColour($('hex-input').value || $('colour-picker').value);
  $('hex-input').onkeydown = (e) => { if (e.key === 'Enter') $('add-colour').click(); };
  $('eyedropper').onclick = (e) => { e.stopPropagation(); setDropping(!state.dropping); };
  $('make-palette').onclick = makePalette;
  $('run').onclick = run;
  const c = $('mask-canvas');
  c.onpointerdown = (e) => { mask.drawing = true; c.setPointerCapture(e.pointerId); paint(e); };
  c.onpointermove = (e) => { if (mask.drawing) paint(e); };
  c.onpointerup = () => { mask.drawing = false; };
  $('mask-show').onchange = () => { c.hidden = !$('mask-show').checked; };
  $('mask-clear').onclick = () => { resetMask(); state.maskEdited = true; };
  $('mask-detector').onclick = () => {
    resetMask();
    state.maskEdited = false;  // the run uses the detector's mask
    if (state.lastMaskUrl) loadMask(state.lastMaskUrl);
  };
}

start();
