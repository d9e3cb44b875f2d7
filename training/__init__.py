"""Training jobs: rerankers, dense encoders, the listwise model and language modules.

Each job is a subcommand of ``python -m training``; see ``training/__main__.py``.
"""
