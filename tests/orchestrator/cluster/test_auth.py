"""The CLI's check of a cluster address under Ray's TLS (orchestrator/cluster/auth.py): Ray's TLS
files that are not all set, or cannot be read, are one line naming them, before any gRPC call."""

import pytest

from orchestrator.cluster.auth import check_gcs
from workers.errors import UserError


def test_rays_tls_on_without_its_files_is_one_line_naming_them(monkeypatch):
    monkeypatch.setenv("RAY_USE_TLS", "1")
    for name in ("RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UserError, match="^RAY_USE_TLS is on but RAY_TLS_SERVER_CERT, RAY_TLS_SERVER_KEY, "
                                        "RAY_TLS_CA_CERT are not set"):
        check_gcs("127.0.0.1:1", "--address 127.0.0.1:1")


def test_rays_tls_on_with_a_file_that_cannot_be_read_is_one_line_naming_it(monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_USE_TLS", "1")
    for name, stem in (("RAY_TLS_SERVER_CERT", "node.crt"), ("RAY_TLS_SERVER_KEY", "node.key"),
                       ("RAY_TLS_CA_CERT", "ca.crt")):
        monkeypatch.setenv(name, str(tmp_path / stem))
    (tmp_path / "node.crt").write_text("x")
    with pytest.raises(UserError, match=f"^RAY_USE_TLS is on but {tmp_path / 'node.key'} cannot be read"):
        check_gcs("127.0.0.1:1", "--address 127.0.0.1:1")
