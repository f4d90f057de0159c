"""Write a public-domain sample photo with a face (NASA's astronaut, shipped in scikit-image)."""
import sys
from pathlib import Path

from skimage import data

from fiva.io import write_image

out = Path(sys.argv[1] if len(sys.argv) > 1 else "demo/astronaut.png")
write_image(out, data.astronaut())
print(out)
