"""Where the trained models that ship inside the package live (no torch import needed).

Both were made with digitlab's own commands on real MNIST; the README records how.
"""

from pathlib import Path

MODELS = Path(__file__).parent / "models"
CNN = MODELS / "cnn"  # the course CNN, all 60,000 images, augmented
GENERATOR = MODELS / "generator"  # the conditional GAN's generator
