"""The mask editor: a FastAPI app and page to edit a mask and generate from it in the browser."""

from segdiff._api import lazy_api

__getattr__, __dir__, __all__ = lazy_api(
    __name__,
    {
        "app": ["create_app", "EditorSettings"],
        "mask_io": [
            "encode_mask", "decode_mask", "check_mask", "read_upload", "mask_png", "mask_npy", "image_png",
            "images_npy",
        ],
    },
)
