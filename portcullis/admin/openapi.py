"""The OpenAPI 3.1 document of the admin API, built from :data:`portcullis.admin.api.OPERATIONS` (the same list
the router is built from) and served at ``GET /admin/api/openapi.json``."""

from __future__ import annotations

import copy
import re
from typing import Any

from portcullis import __version__
from portcullis.admin import schemas as S
from portcullis.admin.api import OPERATIONS
from portcullis.admin.http import API_PREFIX, CODES

ROLE_TEXT = {
    None: "Any authenticated caller.",
    "auditor": "Role: auditor (admin.auditor_groups or admin.admin_groups).",
    "admin": "Role: admin (admin.admin_groups).",
}


def document(server_url: str, servers: list[str]) -> dict[str, Any]:
    """The document for one gateway: its URL, and its server names where a body must name servers."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        params: list[dict[str, Any]] = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
            for n in re.findall(r"{(\w+)}", op.path)
        ]
        params += [{"name": p.name, "in": "query", "description": p.description, "schema": p.schema} for p in op.query]
        answers: dict[str, Any] = {
            "201" if op.method == "POST" and op.path in ("/api-keys", "/agent-tokens") else "200": {
                "description": "OK",
                "content": {op.answer_type: {"schema": op.answer}},
            },
        }
        common = {400, 401, 403, 404, 405, 503} | ({413, 415} if op.body is not None else set())
        if op.path.endswith("/stream"):
            common.add(429)
        for status in sorted(common | set(op.errors)):
            answers[str(status)] = {"$ref": f"#/components/responses/E{status}"}
        spec: dict[str, Any] = {
            "operationId": op.name,
            "summary": op.summary,
            "description": ROLE_TEXT[op.role.value if op.role else None]
            + (" Console callers send X-CSRF-Token." if op.method != "GET" else ""),
            "tags": [op.tag],
            "parameters": params,
            "responses": answers,
        }
        if op.body is not None:
            body = op.body
            if op.body is S.AGENT_TOKEN_BODY:
                body = copy.deepcopy(body)
                body["properties"]["servers"]["items"] = {"type": "string", "enum": servers}
            spec["requestBody"] = {
                "required": op.name not in ("approve", "deny", "review"),
                "content": {"application/json": {"schema": body}},
            }
        paths.setdefault(API_PREFIX + op.path, {})[op.method.lower()] = spec
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Portcullis admin API",
            "version": __version__,
            "description": "Approvals, sessions and the audit trail, policies, agents and keys. Every request is "
            "recorded in the audit trail (kind admin_access). Errors: {error, message} (see the Error schema).",
        },
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}, {"console": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an access token for the gateway's base URL, or an API key",
                },
                "console": {"type": "apiKey", "in": "cookie", "name": "__Host-portcullis-console"},
            },
            "schemas": {"Error": S.ERROR},
            "responses": {
                f"E{status}": {
                    "description": code,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
                for status, code in CODES.items()
            },
        },
    }
