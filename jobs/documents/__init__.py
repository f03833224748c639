"""Documents in: read PDF, HTML, DOCX and text files into job documents, at enqueue.

One reader per format (``pdf``, ``html``, ``docx``), the pure PDF-mode decision (``mode``), the API's
limits and the per-page token estimate (``limits``), and one entry point for files (``loader``), used by
the folder reader and by JSONL ``documents: [{"path": ...}]`` references alike.
"""
