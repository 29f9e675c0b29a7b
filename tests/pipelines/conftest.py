# The video clips of tests/video are used here too.
from tests.video.clips import _video_model, bunny_small  # noqa: F401
