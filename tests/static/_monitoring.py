"""Small schemas of our own for the Prometheus Operator's kinds (kubernetes-validate has none for CRDs)."""

from __future__ import annotations

from typing import Any

_META: dict[str, Any] = {
    "type": "object", "required": ["name", "namespace"],
    "properties": {"name": {"type": "string"}, "namespace": {"const": "refnet"}},
}

_RULE: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["alert", "expr", "labels", "annotations"],
    "properties": {
        "alert": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9]*$"},
        "expr": {"type": "string", "minLength": 1},
        "for": {"type": "string", "pattern": "^[0-9]+[smh]$"},
        "labels": {"type": "object", "required": ["severity"],
                   "properties": {"severity": {"enum": ["page", "ticket"]}}},
        "annotations": {"type": "object", "required": ["summary", "runbook_url"], "additionalProperties": False,
                        "properties": {"summary": {"type": "string"}, "runbook_url": {"type": "string"}}},
    },
}

MONITORING_SCHEMAS: dict[str, dict[str, Any]] = {
    "PrometheusRule": {
        "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PrometheusRule"},
            "metadata": _META,
            "spec": {"type": "object", "additionalProperties": False, "required": ["groups"], "properties": {
                "groups": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "required": ["name", "rules"],
                    "properties": {"name": {"type": "string"}, "rules": {"type": "array", "items": _RULE}}}}}},
        },
    },
    "PodMonitor": {
        "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PodMonitor"},
            "metadata": _META,
            "spec": {"type": "object", "additionalProperties": False, "required": ["selector", "podMetricsEndpoints"],
                     "properties": {
                         "selector": {"type": "object"},
                         "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": {
                             "type": "object", "additionalProperties": False, "required": ["port", "path"],
                             "properties": {"port": {"type": "string"}, "path": {"const": "/metrics"},
                                            "interval": {"type": "string"}}}}}},
        },
    },
}
