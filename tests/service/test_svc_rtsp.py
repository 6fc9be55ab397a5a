"""The service against a real RTSP camera (GStreamer's RTSP server serving H.264, encoded once from a
clip of a real face), with a real mosquitto: frames and events flow, a killed camera is reported and
comes back without a restart, credentials never leak, a camera that never answers does not hold up
the others, and the transport asked for is the one used."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.broker import Mosquitto, Subscriber
from harness.images import face_crop
from harness.machine import free_port, wait_until
from harness.rtsp import RtspServer, encode_h264, require_rtsp_server
from harness.service import ServiceProcess
from service.__main__ import main
from service.config.cameras import redact
from service.demo import Segment, write_clip
from tests.service.test_svc_e2e import service_config


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_rtsp_server()
    # A real face in view the whole time, longer than any stretch a test streams without a reconnect:
    # the shared media drops its clients when the clip ends.
    workdir = tmp_path_factory.mktemp("rtsp")
    clip = write_clip(workdir / "face.avi", face_crop(), [Segment(90.0, size=220)], fps=10)
    return encode_h264(clip, workdir / "face.mkv")


@pytest.fixture
def rtsp_servers() -> Iterator[list[RtspServer]]:
    started: list[RtspServer] = []
    yield started
    for s in started:
        s.kill()


def statuses(sub: Subscriber, cam: str) -> list[tuple[str, str | None]]:
    return [(m.json()["state"], m.json()["reason"]) for m in sub.snapshot(f"fer/{cam}/status")]


def events(sub: Subscriber, cam: str, event_type: str | None = None) -> list[dict]:
    found = [m.json() for m in sub.snapshot(f"fer/{cam}/events")]
    return [e for e in found if event_type is None or e["event_type"] == event_type]


def test_rtsp_camera_online_lost_fault_and_back_without_restart(
    tmp_path: Path, store_root: Path, broker: Mosquitto, clip: Path, rtsp_servers: list, services: list
) -> None:
    server = RtspServer(tmp_path, {"cam": (clip, "any")})
    rtsp_servers.append(server.start())
    sub = Subscriber(broker.port)
    assert sub.connected.wait(5)
    no_frames_s, reconnect_max_s, timeout_s = 2.0, 2.0, 5.0
    cams = [{
        "id": "cam", "source": server.url("cam"), "fps": 5, "timeout_s": timeout_s,
        "reconnect_min_s": 0.5, "reconnect_max_s": reconnect_max_s,
        "rules": {"camera_fault": {"no_frames_s": no_frames_s}},
    }]  # fmt: skip
    svc = ServiceProcess.configured(tmp_path, service_config(tmp_path, store_root, broker.port, cams))
    services.append(svc.start())

    sub.wait_for(lambda ms: ("online", None) in statuses(sub, "cam"), 30, what="camera online")
    sub.wait_for(lambda ms: events(sub, "cam", "expression_change"), 30, what="an expression event")
    assert svc.get("/cameras")["cameras"][0]["status"] == "online"
    state = [m.json() for m in sub.snapshot("fer/cam/expression")]
    assert state and state[-1]["label"] is not None and state[-1]["faces"] == 1

    server.kill()
    killed = time.monotonic()
    sub.wait_for(lambda ms: ("offline", "stream_lost") in statuses(sub, "cam"), 10, what="stream_lost")
    lost_after = time.monotonic() - killed
    assert lost_after <= 2.0, f"stream_lost {lost_after:.2f} s after the camera died"
    sub.wait_for(lambda ms: [e for e in events(sub, "cam", "camera_fault") if e["type"] == "new"], 10, what="fault")
    assert time.monotonic() - killed <= no_frames_s + 0.5
    fault = events(sub, "cam", "camera_fault")[0]
    assert fault["label"] == "stream_lost" and fault["current_zones"] == []
    # Let the backoff reach its ceiling before the camera comes back.
    time.sleep(2 * reconnect_max_s)
    assert svc.get("/cameras")["cameras"][0]["status"] == "offline"

    n_online = statuses(sub, "cam").count(("online", None))
    rtsp_servers.append(RtspServer(tmp_path, {"cam": (clip, "any")}, port=server.port).start())
    back = time.monotonic()
    sub.wait_for(lambda ms: statuses(sub, "cam").count(("online", None)) > n_online, 30, what="online again")
    back_after = time.monotonic() - back
    # One backoff delay at most, plus the RTSP open itself (about 0.6 s here).
    assert back_after <= reconnect_max_s + timeout_s, f"online {back_after:.2f} s after the camera returned"
    sub.wait_for(lambda ms: [e for e in events(sub, "cam", "camera_fault") if e["type"] == "end"], 10, what="end")
    assert svc.proc.poll() is None, "the service restarted"
    frames = svc.get("/cameras")["cameras"][0]["frames_processed"]
    wait_until(lambda: svc.get("/cameras")["cameras"][0]["frames_processed"] > frames + 5, 20, what="frames again")
    print(f"stream_lost after {lost_after:.2f} s; online {back_after:.2f} s after the server returned")
    assert svc.stop() == 0
    sub.close()


def test_rtsp_password_appears_nowhere(
    tmp_path: Path, store_root: Path, broker: Mosquitto, clip: Path, rtsp_servers: list, services: list
) -> None:
    password, wrong = "Sup3r-s3cret-pw", "N0t-the-r1ght-pw"
    server = RtspServer(tmp_path, {"cam": (clip, "any")}, auth=f"viewer:{password}")
    rtsp_servers.append(server.start())
    sub = Subscriber(broker.port)
    assert sub.connected.wait(5)
    cams = [
        {"id": "good", "source": server.url("cam", f"viewer:{password}"), "fps": 5, "reconnect_max_s": 1},
        {"id": "wrong", "source": server.url("cam", f"viewer:{wrong}"), "fps": 5, "reconnect_max_s": 1},
    ]
    svc = ServiceProcess.configured(tmp_path, service_config(tmp_path, store_root, broker.port, cams))
    services.append(svc.start())
    # The credentials work (the camera is online) and the wrong ones are refused, with their log lines.
    sub.wait_for(lambda ms: ("online", None) in statuses(sub, "good"), 30, what="good camera online")
    sub.wait_for(lambda ms: ("offline", "open_failed") in statuses(sub, "wrong"), 30, what="wrong refused")
    sub.wait_for(lambda ms: events(sub, "good", "expression_change"), 30, what="an expression event")
    server.kill()
    sub.wait_for(lambda ms: ("offline", "stream_lost") in statuses(sub, "good"), 10, what="stream_lost")

    base = svc.url
    answers = [httpx.get(base + path, timeout=5) for path in ("/healthz", "/readyz", "/cameras", "/models", "/metrics")]
    answers.append(httpx.get(base + "/cameras/good", timeout=5))
    answers.append(httpx.post(base + "/infer", content=b"x", timeout=5))
    assert answers[2].status_code == 200 and {c["id"] for c in answers[2].json()["cameras"]} == {"good", "wrong"}
    assert svc.stop() == 0
    sub.close()

    text = svc.log.read_text(errors="replace")
    # The log does name the sources (that is what would leak), with the credentials masked, and says why.
    assert "rtsp://***@127.0.0.1" in text and "401 Unauthorized" in text
    places = {"log": text, "metrics": answers[4].text}
    places |= {f"HTTP {r.request.method} {r.request.url.path}": r.text for r in answers}
    places |= {f"MQTT {m.topic}": m.payload.decode("utf-8", "replace") for m in sub.snapshot()}
    assert any(k.startswith("MQTT fer/good/events") for k in places)
    for secret in (password, wrong):
        leaks = [where for where, body in places.items() if secret in body]
        assert not leaks, f"the password appears in {leaks}"


def test_rtsp_transport_is_the_one_configured_and_dead_cameras_fail_in_bounded_time(
    tmp_path: Path, store_root: Path, broker: Mosquitto, clip: Path, rtsp_servers: list, services: list
) -> None:
    # Each mount accepts one transport only, so a camera online on it used that transport.
    server = RtspServer(
        tmp_path, {"tcp": (clip, "tcp"), "udp": (clip, "udp"), "tcp2": (clip, "tcp"), "udp2": (clip, "udp")}
    )
    rtsp_servers.append(server.start())
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never says a word
    silent_port = silent.getsockname()[1]
    sub = Subscriber(broker.port)
    assert sub.connected.wait(5)
    timeout_s = 2.0
    cams = [
        {"id": "tcp", "source": server.url("tcp"), "fps": 5},  # the default transport
        {"id": "udp", "source": server.url("udp"), "fps": 5, "transport": "udp"},
        # Each the other way round: FFmpeg on its own would fall back to the transport the server takes.
        {"id": "wrong_udp", "source": server.url("tcp2"), "fps": 5, "transport": "udp", "reconnect_min_s": 5},
        {"id": "wrong_tcp", "source": server.url("udp2"), "fps": 5, "transport": "tcp", "reconnect_min_s": 5},
        {"id": "refused", "source": f"rtsp://127.0.0.1:{free_port()}/cam", "fps": 5, "timeout_s": timeout_s},
        {"id": "silent", "source": f"rtsp://127.0.0.1:{silent_port}/cam", "fps": 5, "timeout_s": timeout_s},
    ]
    try:
        svc = ServiceProcess.configured(tmp_path, service_config(tmp_path, store_root, broker.port, cams))
        services.append(svc.start())
        ready = time.monotonic()
        for cam in ("refused", "silent"):
            sub.wait_for(lambda ms, cam=cam: statuses(sub, cam), 3 * timeout_s + 5, what=f"{cam} status")
            assert statuses(sub, cam)[0] == ("offline", "open_failed")
        bounded = time.monotonic() - ready
        for cam in ("tcp", "udp"):
            sub.wait_for(lambda ms, cam=cam: ("online", None) in statuses(sub, cam), 30, what=f"{cam} online")
        for cam in ("wrong_udp", "wrong_tcp"):
            sub.wait_for(lambda ms, cam=cam: statuses(sub, cam), 30, what=f"{cam} status")
            assert statuses(sub, cam)[0] == ("offline", "open_failed")

        # While the dead cameras keep retrying, the live ones keep their frame rate.
        def frames() -> dict[str, int]:
            return {c["id"]: c["frames_processed"] for c in svc.get("/cameras")["cameras"]}

        before, t0 = frames(), time.monotonic()
        time.sleep(4 * timeout_s)
        after, elapsed = frames(), time.monotonic() - t0
        for cam in ("tcp", "udp"):
            fps = (after[cam] - before[cam]) / elapsed
            assert fps >= 2.5, f"{cam} analysed {fps:.1f} fps of 5 while other cameras failed"
        assert {"refused": after["refused"], "silent": after["silent"]} == {"refused": 0, "silent": 0}
        for cam in ("refused", "silent", "wrong_udp", "wrong_tcp"):
            assert ("online", None) not in statuses(sub, cam)
        print(f"open_failed for both dead cameras within {bounded:.2f} s of the service being ready")
        assert svc.stop() == 0
    finally:
        silent.close()
        sub.close()


def test_check_prints_camera_sources_without_credentials(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "c.yaml"
    url = "rtsp://admin:Sup3r-s3cret@cam.local:554/h264?ch=1"
    path.write_text(f"cameras: [{{id: a, source: '{url}'}}, {{id: b, source: 0}}]\n")
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Sup3r-s3cret" not in out and "rtsp://***@cam.local:554/h264?ch=1" in out
    assert redact("rtsp://u:p@ss@h/x") == "rtsp://***@h/x" and redact("rtsp://h/a@b") == "rtsp://h/a@b"
