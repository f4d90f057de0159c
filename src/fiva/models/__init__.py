"""Networks: the FIVA generator, its discriminator (and later the reconstruction attack)."""
from .discriminator import Discriminator
from .generator import GeneratorConfig, FIVAGenerator, load_generator, save_generator

__all__ = ["Discriminator", "FIVAGenerator", "GeneratorConfig", "load_generator", "save_generator"]
