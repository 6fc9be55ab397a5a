"""Username/password and TLS against a real mosquitto; a refused connection is never `connected`."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

from harness.broker import HAVE_MOSQUITTO, Mosquitto, Subscriber
from harness.machine import free_port, wait_until
from harness.service import ServiceProcess
from harness.store import SEED_STORE
from service.comms.mqtt import CLIENT_ID_FILE, MqttPublisher
from service.comms.outbox import Outbox
from service.config import MqttConfig
from service.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not HAVE_MOSQUITTO, reason="mosquitto is not installed")


def publisher(tmp_path: Path, cfg: dict) -> MqttPublisher:
    config = MqttConfig.model_validate({"reconnect_min_s": 0.5, "reconnect_max_s": 1, **cfg})
    metrics = Metrics(CollectorRegistry())
    return MqttPublisher(config, Outbox(tmp_path / "o.sqlite3", 100, metrics), metrics)


def secured_broker(tmp_path: Path, extra: str) -> Mosquitto:
    broker = Mosquitto(tmp_path / "broker")
    text = broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false")
    broker.conf.write_text(text + extra)
    return broker


def test_password_auth_and_refusal(tmp_path: Path) -> None:
    if not shutil.which("mosquitto_passwd"):
        pytest.skip("mosquitto_passwd is not installed")
    passwd = tmp_path / "passwd"
    passwd.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "fer", "s3cret"], check=True)
    broker = secured_broker(tmp_path, f"password_file {passwd}\n").start()
    good = publisher(tmp_path / "good", {"port": broker.port, "username": "fer", "password": "s3cret"})
    bad = publisher(tmp_path / "bad", {"port": broker.port, "username": "fer", "password": "wrong",
                                       "client_id": "fer-bad"})  # fmt: skip
    # The password in a file, as compose's mqtt-auth leaves it for the service (its first line).
    (tmp_path / "fer.password").write_text("s3cret\n")
    from_file = publisher(tmp_path / "file", {"port": broker.port, "username": "fer", "client_id": "fer-file",
                                              "password_file": str(tmp_path / "fer.password")})  # fmt: skip
    try:
        good.start()
        bad.start()
        from_file.start()
        wait_until(lambda: good.connected and from_file.connected, 10, what="authenticated connects")
        time.sleep(1.5)  # several refused attempts
        assert not bad.connected
        assert bad.metrics.registry.get_sample_value("fer_mqtt_connected") == 0
        assert good.metrics.registry.get_sample_value("fer_mqtt_connected") == 1
    finally:
        good.stop()
        bad.stop()
        from_file.stop()
        broker.kill()


def test_an_unreadable_password_file_stops_the_start_in_one_line(tmp_path: Path) -> None:
    """Named by its key, never with a secret, and before anything is published."""
    missing = tmp_path / "secrets" / "fer"
    config = {"state_dir": str(tmp_path / "state"), "api": {"port": free_port()},
              "mqtt": {"port": free_port(), "username": "fer", "password_file": str(missing)}}  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FER_")}
    result = subprocess.run([sys.executable, "-m", "service", "--config", str(path)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert f"cannot start: mqtt.password_file {missing}: No such file or directory" in result.stderr
    # An empty file is no password; a password given as such wins over the file (FER_MQTT__PASSWORD over compose's).
    (tmp_path / "empty").write_text("\n")
    cfg = MqttConfig.model_validate({"username": "fer", "password_file": str(tmp_path / "empty")})
    with pytest.raises(OSError, match="the first line is empty"):
        cfg.login_password()
    cfg = MqttConfig.model_validate({"username": "fer", "password": "given", "password_file": str(missing)})
    assert cfg.login_password() == "given"
    with pytest.raises(ValueError, match="a password is set but username is not"):
        MqttConfig.model_validate({"password_file": str(missing)})


def test_tls(tmp_path: Path) -> None:
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    ca_key, ca, key, csr, cert = (tmp_path / n for n in ("ca.key", "ca.crt", "srv.key", "srv.csr", "srv.crt"))

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", "/CN=fer-test-ca")  # fmt: skip
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert),
        "-days", "2", "-extfile", str(ext))  # fmt: skip
    broker = Mosquitto(tmp_path / "broker")
    broker.conf.write_text(broker.conf.read_text() + f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n")
    broker.start()
    pub = publisher(tmp_path, {"port": broker.port, "tls": {"enabled": True, "ca_certs": str(ca)}})
    plain = None
    try:
        pub.start()
        wait_until(lambda: pub.connected, 10, what="TLS connect")
        # A plain client cannot talk to the TLS listener, while that listener is up and serving TLS.
        plain = Subscriber(broker.port)
        time.sleep(1.0)
        assert not plain.connected.is_set()
        assert pub.connected
    finally:
        if plain is not None:
            plain.close()
        pub.stop()
        broker.kill()


def test_no_other_client_can_take_the_service_off_the_broker(tmp_path: Path) -> None:
    """The review: a read-only user connecting with the client id `fer-edge` disconnected the service (a
    broker keeps the newer of two clients with one id); its last will then marked it offline, and the
    reconnects made it flap. The service's ids now end in a secret kept in state_dir."""
    broker = Mosquitto(tmp_path / "broker").start()
    state = tmp_path / "state"
    svc = ServiceProcess.configured(tmp_path / "svc", {
        "state_dir": str(state), "log_level": "WARNING", "model": {"store": str(SEED_STORE), "watch_interval_s": 0},
        "mqtt": {"port": broker.port, "reconnect_min_s": 0.5, "reconnect_max_s": 1},
    })  # fmt: skip
    watcher = Subscriber(broker.port, ("fer/available",))
    intruders: list[mqtt.Client] = []
    try:
        svc.start()
        watcher.wait_for(lambda ms: [m for m in ms if m.json()["state"] == "online"], what="the service online")
        secret = (state / CLIENT_ID_FILE).read_text().strip()
        assert len(secret) == 16 and stat.S_IMODE((state / CLIENT_ID_FILE).stat().st_mode) == 0o600
        log = broker.log.read_text()
        assert f"fer-edge-{secret}" in log and f"fer-edge-{secret}-dashboard" in log
        for client_id in ("fer-edge", "fer-edge-dashboard"):  # the ids anyone could guess
            intruder = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
            intruder.connect("127.0.0.1", broker.port)
            intruder.loop_start()
            intruders.append(intruder)
        time.sleep(3)
        states = [m.json()["state"] for m in watcher.snapshot()]
        assert states == ["online"], f"the service was knocked off the broker: {states}"
        assert svc.get("/readyz")["mqtt"] == "connected"
        # A restart resumes the same session: the same id.
        svc.stop()
        svc.start()
        watcher.wait_for(lambda ms: [m for m in ms if m.json()["state"] == "stopped"], what="a clean stop")
        assert (state / CLIENT_ID_FILE).read_text().strip() == secret
    finally:
        for intruder in intruders:
            intruder.disconnect()
            intruder.loop_stop()
        watcher.close()
        svc.stop()
        broker.stop()

