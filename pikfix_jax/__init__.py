"""pikfix_jax: Pik-Fix (WACV 2023) in JAX/Flax."""
