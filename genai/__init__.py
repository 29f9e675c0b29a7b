"""genai: generative AI suite. The core library: models, engines, media I/O and the CLI.

It imports neither Ray nor FastAPI: everything the service does can be done from Python
or the ``genai`` command on one machine.

    >>> from genai import EngineConfig, Upscaler, read_image, write_image
    >>> up = Upscaler(config=EngineConfig(model="realesr-animevideov3"))
    >>> image = read_image("in.png")
    >>> out, info = up.upscale_image(image, scale=2)
    >>> write_image(out, "out.png")
"""

from genai.sr import EngineConfig, UpscaleResult, Upscaler
from genai.errors import Cancelled, GenaiError, InputError, ModelError
from genai.images import Image, read_image, write_image
from genai.progress import Progress
from genai.registry import Manifest, Registry

__all__ = [
    "Cancelled", "EngineConfig", "GenaiError", "Image", "InputError", "Manifest", "ModelError",
    "Progress", "Registry", "UpscaleResult", "Upscaler", "read_image", "write_image",
]
__version__ = "0.1.0"
