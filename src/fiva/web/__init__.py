"""`fiva serve`: a local web page to anonymize photos and videos, review them and choose who stays.

`workspace.py` does the work (uploads, face detection, anonymization jobs in a temporary folder);
`server.py` puts it behind HTTP (Starlette + uvicorn, the optional `[web]` extra); `static/` holds
the page itself, hand-written, loading nothing from outside the local server.
"""
