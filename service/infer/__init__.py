"""The /infer path, as pipeline/ is the camera path's: one still image is checked before it is decoded
(imaging), then detected, cropped and classified (analysis). The HTTP route is service/api/infer.py."""
