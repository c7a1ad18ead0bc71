"""What every method's config shares: data and degradation, metrics, backbone files, optimiser,
training loop. Each method's config builds on this one and adds its own `method`, `model` and
`loss` sections (configs/default.py: Pik-Fix; configs/baselines/). Every field is used.

Override anything from the command line with `--config.section.field=value`; an unknown key
is an error.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # Seeds parameters, data order, crops, degradations and dropout.

  # ----------------------------------------------------------------------------- data
  c.dataset = 'div2k'  # One of: demo, div2k, voc, realold, image_folder.
  c.data = ml_collections.ConfigDict()
  c.data.image_size = 256  # Side of the square random training crop (paper: 256).
  c.data.eval_image_size = 256  # Side of the centre crop used for validation batches (0: full image, padded).
  c.data.data_dir = ''  # tfds data_dir ('' = tfds default, ~/tensorflow_datasets).
  c.data.manual_dir = ''  # Manual download dir for tfds builders that need one (realold).
  c.data.image_folder = ''  # Folder of photos for dataset=image_folder.
  c.data.val_fraction = 0.1  # Fraction of image_folder photos held out for validation (split by data.split_seed).
  c.data.voc_num_train = 10000  # Pascal VOC training images (paper: 10,000, seeded subset).
  c.data.voc_num_test = 1000  # Pascal VOC test images (paper: 1,000).
  # Model selection: training images held out (drawn by data.split_seed) as the 'selection'
  # split that training-time validation scores and best/ is chosen on; 0 = none (validation
  # then watches the evaluation split, and evaluate refuses --use_best). A deviation from the
  # paper, which trains a fixed 20 epochs and reports the final model (docs/REPRODUCE.md).
  c.data.selection_size = 0
  c.data.split_seed = 0  # Seeds voc/image_folder splits and eval degradations (not c.seed: one test set).
  c.data.shuffle_buffer = 1000  # Shuffle buffer for tfds datasets (file lists are permuted exactly).
  c.data.train_repeats = 1  # Passes over the training images per epoch (tiny datasets such as demo).
  c.data.cache = False  # Cache decoded images in memory (small datasets only).
  c.data.degrade = False  # Apply synthetic old-photo degradation to the input luminance.
  # Add `defect_mask` (B, H, W, 1) to training and evaluation batches: 1 where the scratch
  # texture or a hole changed the grey print by more than degradations.DEFECT_MASK_THRESHOLD
  # (8) 8-bit units (the target of Wan et al. 2020's scratch detector; docs/DATA.md "Defect
  # mask"); all zeros for clean / undegraded inputs. False: batches exactly as before.
  c.data.defect_mask = False
  # Folder of unpaired real old photo scans (recursive, any image format; Wan et al.'s domain R):
  # when set, training batches gain `real_l` (B, S, S, 1), the L/100 of a seeded random S x S
  # crop of one of them (docs/DATA.md). '' = none.
  c.data.real_old_dir = ''
  # Facial-component boxes of a face folder (data_prep.face_components, JSON): when set,
  # training batches gain `face_boxes` (B, 3, 4), the left eye / right eye / mouth boxes
  # (x0, y0, x1, y1) in crop pixels, and `face_box_valid` (B, 3), 0 where a face has none or
  # a box leaves the crop (GFP-GAN's component losses; docs/DATA.md). '' = none.
  c.data.face_components = ''
  c.data.eye_enlarge_ratio = 1.4  # Eye boxes' half side x this (GFP-GAN's release).
  c.data.reference_strategies = (1, 2)  # Reference strategies, alternating one per epoch (paper sec. 4.1).
  c.data.retrieval_index = ''  # Reference index (data_prep.build_reference_index); '' = random other image.
  c.data.retrieval_top_k = 10  # Strategy 2 draws from this many most similar training images.
  c.data.eval_reference = 'auto'  # 'auto' (own/retrieval top-1/other eval image) or 'self' (docs/DATA.md).
  # With a retrieval index and eval_image_size > 0: query it with the evaluation crop ('crop',
  # so the reference matches what the model sees) or the whole photo's index row ('image').
  c.data.eval_reference_query = 'crop'
  # Evaluation: every image is scored once per angle (degrees), its ground truth and reference
  # hue-rotated together in the CIE ab plane (L kept): colours away from the training prior.
  c.data.eval_hue_rotations = (0.0,)
  # Training: target and reference hue-rotated together by one uniform random angle in
  # [-hue_rotation, hue_rotation] degrees, so colour must come from the reference, not from the
  # content (docs/MODEL.md, "Why the reference steers"). 0 = off (paper); 180 = any hue.
  c.data.hue_rotation = 0.0
  c.data.jitter_brightness = 0.2  # Strategy 1: max brightness jitter of the reference.
  c.data.jitter_contrast = 0.2  # Strategy 1: max relative contrast jitter.
  c.data.jitter_saturation = 0.2  # Strategy 1: max relative saturation jitter.
  c.data.jitter_hue = 0.05  # Strategy 1: max hue shift (fraction of the colour wheel).
  # Strategy 1: the reference crop lies at most this fraction of the crop side from the
  # input's along each axis (0 = anywhere in the image, the paper).
  c.data.reference_max_shift = 0.0
  c.data.affine_max_rotation = 10.0  # Strategy 1: max rotation of the reference (degrees).
  c.data.affine_max_scale = 0.1  # Strategy 1: max relative scale change of the reference.
  c.data.affine_max_shear = 0.1  # Strategy 1: max shear of the reference.

  # Synthetic degradation (Wan et al. 2020 sec. 4.2 + Pik-Fix sec. 4.1).
  d = c.data.degradation = ml_collections.ConfigDict()
  # Unstructured degradations applied, in random order (of noise, blur, jpeg, color_jitter,
  # box_blur); each one listed is skipped with probability drop_prob.
  d.unstructured = ('noise', 'blur', 'jpeg', 'color_jitter', 'box_blur')
  d.drop_prob = 0.3  # Each unstructured degradation is skipped with this probability.
  # Training: probability that an example's input is left clean, so the restoration sub-net
  # also learns to keep what needs no repair (0 = always degraded, the paper's recipe).
  d.clean_prob = 0.0
  d.noise_sigma = (5.0, 50.0)  # Gaussian noise std, 8-bit units.
  d.blur_kernel_sizes = (3, 5, 7)  # Gaussian blur kernel sizes.
  d.blur_sigma = (1.0, 5.0)  # Gaussian blur std (pixels).
  d.jpeg_quality = (40, 100)  # JPEG quality range.
  d.color_jitter = 20.0  # Colour jitter: every channel shifted by up to +- this, 8-bit units.
  d.box_blur_sizes = (3, 5)  # Box blur kernel sizes.
  d.texture_prob = 0.7  # Probability of blending a scratch/crack/dust texture.
  d.paper_prob = 0.5  # Probability of blending a paper texture (stains, wear).
  d.texture_opacity = (0.2, 0.8)  # Opacity of the blended texture.
  d.texture_dir = ''  # Optional extra textures: DIR/scratch/*, DIR/paper/* (bright = defect; docs/DATA.md).
  d.num_textures = 24  # Procedural textures of each kind (scratch, paper), drawn at pipeline start.
  d.texture_size = 512  # Side of the procedural texture images (px).
  d.fade_prob = 0.5  # Probability of fading the print towards a paper tone (docs/DATA.md).
  d.fade_strength = (0.05, 0.35)  # Fraction of the fade towards the paper tone.
  d.hole_prob = 0.5  # Probability of feathered white holes / polygons.
  d.max_holes = 3  # Maximum number of holes/polygons.
  d.hole_radius = (0.05, 0.25)  # Hole/polygon radius, fraction of the image's short side.
  d.hole_feather = (1.0, 4.0)  # Feathering blur std of the (non-polygon) holes, px.
  d.grain_prob = 0.5  # Probability of film grain.
  d.grain_sigma = (2.0, 10.0)  # Film grain std, 8-bit units.

  # -------------------------------------------------------------------------- metrics
  c.metrics = ml_collections.ConfigDict()
  # SSIM and LPIPS of validation and evaluate: 'authors' (their released code: SSIM with a
  # Gaussian 11x11 window, zero padding; LPIPS AlexNet; paper tables) or 'skimage'
  # (scikit-image's SSIM defaults; LPIPS VGG). pikfix_jax/metrics.py.
  c.metrics.convention = 'authors'

  # ------------------------------------------------------------------------ backbones
  # Converted ImageNet weights (data_prep.convert_weights; docs/WEIGHTS.md); '' = random.
  b = c.backbones = ml_collections.ConfigDict()
  b.vgg19 = ''  # VGG-19 params (perceptual losses, reference retrieval).
  # Converted LPIPS backbone + heads (evaluation only) of metrics.convention's network:
  # --arch=lpips_alex for 'authors', --arch=lpips_vgg for 'skimage' (docs/WEIGHTS.md).
  b.lpips = ''

  # --------------------------------------------------------------------------- optim
  o = c.optim = ml_collections.ConfigDict()
  o.learning_rate = 1e-4  # Adam learning rate (G and D; each method's config sets its own).
  o.b1 = 0.99  # Adam beta1 as written in the paper.
  o.b2 = 0.999  # Adam beta2.
  o.eps = 1e-8  # Adam epsilon (optax's default; the paper gives none).
  # Schedule (pikfix_jax/optim.py): 'exponential' (the paper: x decay_rate after every epoch) or
  # 'linear_decay' (constant for constant_epochs, then linear to 0 over decay_epochs; Pix2pix,
  # Wan et al.). The rate changes only at epoch boundaries.
  o.lr_schedule = 'exponential'
  o.decay_rate = 0.99  # 'exponential': learning rate multiplied by this after every epoch.
  o.constant_epochs = 100  # 'linear_decay': epochs at the initial rate (junyanz's n_epochs).
  o.decay_epochs = 100  # 'linear_decay': epochs of linear decay (junyanz's n_epochs_decay).
  o.grad_clip = 0.0  # Global-norm gradient clipping (0 = off).

  # --------------------------------------------------------------------------- train
  t = c.train = ml_collections.ConfigDict()
  # Global batch size (all devices/processes; a multiple of the device count). The paper gives
  # none; the authors' released config trains with 2 (docs/REPRODUCE.md, "Notes").
  t.batch_size = 2
  t.num_epochs = 20  # Paper: 20 epochs.
  t.num_train_steps = -1  # Stop after this many steps (-1: num_epochs).
  t.steps_per_epoch = -1  # Steps per epoch (-1: dataset size / batch size).
  t.log_every = 50  # Steps between scalar summaries.
  t.image_every = 500  # Steps between image-grid summaries.
  t.eval_every = 1000  # Steps between validation runs (and at the end).
  t.num_eval_batches = -1  # Validation batches per evaluation (-1: whole split).
  t.eval_batch_size = 8  # Validation batch size.
  t.checkpoint_every = 1000  # Steps between checkpoints (and at the end / on SIGTERM).
  t.keep_checkpoints = 3  # Most recent checkpoints kept (the best by val PSNR is kept too).
  return c
