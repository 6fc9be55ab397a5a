"""Faults from outside, to see what the service does with them: a network that lets clients through
only when told and cuts them off at once (`GatedProxy`), and model versions that must never be served,
each published into a real store the way a broken trainer or a bad disk would leave it (`FAULTS`)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable

import numpy as np

from harness.machine import free_port
from harness.store import publish_copy
from model_store import MANIFEST_FILE, ModelStore


class GatedProxy:
    """A TCP forwarder whose gate decides when clients get through to the broker."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.open = threading.Event()
        self.open.set()
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            if not self.open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def sever(self) -> None:
        """Cut every open connection, as a network failure would (the broker then sends Wills)."""
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        with self._lock:
            for s in self._conns:
                with contextlib.suppress(OSError):
                    s.close()


# -- versions that must never be served ------------------------------------------------------------


def float32_graph() -> bytes:
    """A small, valid float32 graph of another model: N×1×48×48 float in, 7 probabilities out."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.standard_normal((48 * 48, 7)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, 48 * 48], np.int64), "shape")
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["input", "shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ],
        "other",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 1, 48, 48])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [None, 7])],
        initializer=[weights, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _flipped_byte(store: ModelStore) -> int:
    v = publish_copy(store)
    path = store.version_dir("ean", v) / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return v


def _truncated(store: ModelStore) -> int:
    v = publish_copy(store)
    path = store.version_dir("ean", v) / "model.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    return v


def _missing_file(store: ModelStore) -> int:
    v = publish_copy(store)
    (store.version_dir("ean", v) / "model.onnx").unlink()
    return v


def _corrupt_manifest(store: ModelStore) -> int:
    v = publish_copy(store)
    path = store.version_dir("ean", v) / MANIFEST_FILE
    doc = json.loads(path.read_text())
    doc["input"]["shape"] = "not a shape"
    path.write_text(json.dumps(doc))
    return v


def _garbage_with_matching_hash(store: ModelStore) -> int:
    return publish_copy(store, model_bytes=b"this is not an onnx graph" * 100)


def _five_labels_for_seven_outputs(store: ModelStore) -> int:
    return publish_copy(store, labels=["angry", "fear", "happy", "sad", "neutral"])


def _float32_graph_of_another_model(store: ModelStore) -> int:
    return publish_copy(store, model_bytes=float32_graph())


# Verification catches the first four; only loading the graph catches the last three.
FAULTS: dict[str, Callable[[ModelStore], int]] = {
    "flipped_byte": _flipped_byte,
    "truncated": _truncated,
    "missing_file": _missing_file,
    "corrupt_manifest": _corrupt_manifest,
    "garbage_with_matching_hash": _garbage_with_matching_hash,
    "five_labels_for_seven_outputs": _five_labels_for_seven_outputs,
    "float32_graph_of_another_model": _float32_graph_of_another_model,
}
UNSERVABLE_BUT_VERIFIED = ("garbage_with_matching_hash", "five_labels_for_seven_outputs",
                           "float32_graph_of_another_model")  # fmt: skip
