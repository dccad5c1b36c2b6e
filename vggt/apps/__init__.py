"""Web apps on top of the pipeline: `vggt demo` (a Gradio page that reconstructs uploads, `demo`) and `vggt view`
(a viser 3D viewer of a saved reconstruction, `viewer`).

One job per module: `checks` (what is verified before a model loads), `sessions` (each visitor's working folder
and its lifetime), `runner` (the one model of a server and its runs), `views` (the 3D scene and the per-frame
views re-rendered from cached predictions), `downloads` (the files offered for download), `demo_page` (the page's
components) and `demo` (its events and the server). gradio and viser are imported only by the modules that use
them, and only when they run.
"""
