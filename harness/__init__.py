"""The real peers that tests/ and bench/ start to drive the service from outside; the one place they are
written.

- `harness.machine`: free ports, waiting for a condition or a listener, a process's CPU and memory
- `harness.broker`: a mosquitto (amqtt where none is installed) and a recording MQTT subscriber
- `harness.rtsp`: GStreamer's RTSP server as network cameras (`harness/rtsp_server.py` is its program)
- `harness.service`: `python -m service` as a process, or an app in a uvicorn thread
- `harness.images`: frames with a real face, and their encodings
- `harness.store`: a copy of the seed store, and versions published into it
- `harness.faults`: a proxy that cuts the network, and versions that must never be served

Never shipped: pyproject.toml lists it so that the editable install (`make`) puts it on the path of a
bench script run as a file, but the images build from a context without it (.dockerignore). What a
bench imports needs nothing beyond the [service] extra; test-only packages (scikit-image, onnx, pytest,
amqtt) are imported only by the function that needs them.
"""
