"""The genai service: a FastAPI gateway in front of Ray Serve deployments, with a job store,
API keys, storage for uploads and results, and a web page. It calls ``genai`` only."""
