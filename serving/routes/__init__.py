"""One router per feature: images (synchronous upscale), jobs, models, health, web page."""
