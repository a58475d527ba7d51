"""The mask editor: a FastAPI app and page to edit a mask and generate from it in the browser."""

from segdiff.editor.app import create_app

__all__ = ["create_app"]
