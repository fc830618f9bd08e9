"""Signing at approval, key rotation on the control plane, the built-ins and the Reviewers
group shipped by data migrations."""

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from django.contrib.auth.models import Group
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from agent.signing import generate_private_key_pem, load_private_key, load_public_key, verify
from ccs.env import env_public_keys
from plugins import selectors, services
from plugins.builtin import BUILTINS, body_sha256
from plugins.models import PluginVersion
from plugins.signing import accepted_public_keys_pem, key_id, public_key_pem

pytestmark = pytest.mark.django_db


def _public_pem(private_pem: bytes) -> str:
    return load_private_key(private_pem).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def test_rotation_keeps_old_approvals_valid_without_resigning(make_version):
    old, new = generate_private_key_pem(), generate_private_key_pem()
    with override_settings(CCS_SIGNING_KEY=old, CCS_SIGNING_PREVIOUS_KEYS=[]):
        v1 = make_version("approved")
        assert selectors.version_signing_key(v1) == key_id(load_public_key(_public_pem(old)))
    with override_settings(CCS_SIGNING_KEY=new, CCS_SIGNING_PREVIOUS_KEYS=[_public_pem(old)]):
        v2 = make_version("approved")
        assert accepted_public_keys_pem() == [_public_pem(new), _public_pem(old)]
        assert selectors.version_signing_key(v1) == key_id(load_public_key(_public_pem(old)))
        assert selectors.version_signing_key(v2) == key_id(load_public_key(_public_pem(new)))
        keys = [load_public_key(pem) for pem in accepted_public_keys_pem()]
        for version in (v1, v2):
            verify(keys, version.signed_meta(), version.signature)
    # Once the old key is dropped from the settings, its approvals are no longer recognised.
    with override_settings(CCS_SIGNING_KEY=new, CCS_SIGNING_PREVIOUS_KEYS=[]):
        assert selectors.version_signing_key(v1) is None
    assert PluginVersion.objects.get(pk=v1.pk).signature == v1.signature


def test_previous_keys_from_files_or_base64(tmp_path, monkeypatch):
    first, second = generate_private_key_pem(), generate_private_key_pem()
    path = tmp_path / "old.pem"
    path.write_text(_public_pem(first))
    raw = load_private_key(second).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    monkeypatch.setenv("KEYS", f"{path}, {base64.b64encode(raw).decode()}")
    assert env_public_keys("KEYS") == [_public_pem(first), _public_pem(second)]
    monkeypatch.setenv("KEYS", f"{path},/no/such/key.pem")
    with pytest.raises(ImproperlyConfigured, match=r"KEYS\[1\]"):
        env_public_keys("KEYS")
    monkeypatch.delenv("KEYS")
    assert env_public_keys("KEYS") == []


def test_builtins_are_approved_and_signed_by_the_migrations():
    versions = {v.plugin.name: v for v in PluginVersion.objects.select_related("plugin")}
    assert {"ping", "sysinfo", "sleep"} <= set(versions)
    public = [load_public_key(public_key_pem())]
    for spec in BUILTINS:
        version = versions[spec["name"]]
        assert (version.status, version.number) == ("approved", 1)
        assert version.sha256 == body_sha256(spec["body"]) == body_sha256(version.body)
        verify(public, version.signed_meta(), version.signature)
    assert versions["sleep"].params_schema["required"] == ["seconds"]
    assert versions["sysinfo"].interpreter == "python3"


def test_builtin_install_is_idempotent():
    assert services.builtin_plugins_install() == 0
    assert PluginVersion.objects.filter(plugin__name__in=["ping", "sysinfo", "sleep"]).count() == 3


def test_reviewers_group_is_seeded_with_the_review_permission():
    group = Group.objects.get(name="Reviewers")
    codenames = set(group.permissions.values_list("codename", flat=True))
    assert "review_pluginversion" in codenames
    assert services.reviewers_group_ensure().pk == group.pk
