"""Training: data (aligned-crop cache), losses, and the generator training loop (DDP-ready)."""
