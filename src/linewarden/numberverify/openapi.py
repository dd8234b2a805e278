"""The published contract: OpenAPI 3.0.3 for the Number Verification endpoints.

Shapes follow CAMARA Number Verification v0 (request with exactly one of `phoneNumber` /
`hashedPhoneNumber`, `devicePhoneNumberVerified` / `devicePhoneNumber` answers, ErrorInfo
errors). Served at BASE_PATH + "/openapi.json"; docs/numberverify-openapi.json is a copy
that a test keeps identical.
"""

from __future__ import annotations

import copy
from typing import Any

from ..policy import NV_READ, NV_VERIFY

BASE_PATH = "/number-verification/v0"

_PHONE = r"^\+[1-9][0-9]{4,14}$"
_HASH = r"^[a-fA-F0-9]{64}$"
_CORRELATOR = r"^[a-zA-Z0-9\-_:;./<>{}]{0,256}$"


def _error(status: int, codes: list[str], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"x-correlator": {"$ref": "#/components/headers/x-correlator"}},
        "content": {"application/json": {"schema": {
            "allOf": [{"$ref": "#/components/schemas/ErrorInfo"},
                      {"type": "object", "properties": {
                          "status": {"type": "integer", "enum": [status]},
                          "code": {"type": "string", "enum": codes}}}]}}},
    }


_ERRORS = {
    "401": _error(401, ["UNAUTHENTICATED"], "Missing, invalid, expired or already used "
                  "access token (each token answers one call)"),
    "403": _error(403, ["PERMISSION_DENIED",
                        "NUMBER_VERIFICATION.USER_NOT_AUTHENTICATED_BY_MOBILE_NETWORK",
                        "NUMBER_VERIFICATION.INVALID_TOKEN_CONTEXT"],
                  "The token lacks the scope, the client is no longer registered, or the "
                  "subscriber opted out of this client"),
    "503": _error(503, ["UNAVAILABLE"], "The answer could not be recorded in the "
                  "disclosure ledger, so it is withheld"),
}

_DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "linewarden Number Verification",
        "version": "0.1.0",
        "description": (
            "CAMARA-style Number Verification served by a linewarden gateway. The access "
            "token comes from the authorization code flow at /oauth/authorize (the "
            "subscriber is recognised from the mobile network, prompt=none) and "
            "/oauth/token. A token lives at most 300 s, answers exactly one call, and is "
            "bound to the partner and the subscriber. Every answer is recorded in the "
            "operator's disclosure ledger before it is sent."),
        "license": {"name": "Apache-2.0"},
    },
    "servers": [{"url": BASE_PATH}],
    "paths": {
        "/verify": {"post": {
            "operationId": "phoneNumberVerify",
            "summary": "Is the device behind the access token on this phone number?",
            "parameters": [{"$ref": "#/components/parameters/x-correlator"}],
            "security": [{"networkAuth": [NV_VERIFY]}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/NumberVerificationRequestBody"}}}},
            "responses": {
                "200": {
                    "description": "The comparison result",
                    "headers": {"x-correlator": {"$ref": "#/components/headers/x-correlator"}},
                    "content": {"application/json": {"schema": {
                        "$ref": "#/components/schemas/NumberVerificationMatchResponse"}}}},
                "400": _error(400, ["INVALID_ARGUMENT"],
                              "Not exactly one of phoneNumber / hashedPhoneNumber, or a "
                              "value in the wrong format"),
                **_ERRORS,
            },
        }},
        "/device-phone-number": {"get": {
            "operationId": "phoneNumberShare",
            "summary": "The phone number of the device behind the access token",
            "parameters": [{"$ref": "#/components/parameters/x-correlator"}],
            "security": [{"networkAuth": [NV_READ]}],
            "responses": {
                "200": {
                    "description": "The device's phone number",
                    "headers": {"x-correlator": {"$ref": "#/components/headers/x-correlator"}},
                    "content": {"application/json": {"schema": {
                        "$ref": "#/components/schemas/NumberVerificationShareResponse"}}}},
                "400": _error(400, ["INVALID_ARGUMENT"], "A malformed x-correlator"),
                **_ERRORS,
            },
        }},
    },
    "components": {
        "securitySchemes": {"networkAuth": {
            "type": "oauth2",
            "description": "Authorization code flow; the subscriber is authenticated by the "
                           "mobile network, never by a password.",
            "flows": {"authorizationCode": {
                "authorizationUrl": "/oauth/authorize", "tokenUrl": "/oauth/token",
                "scopes": {NV_VERIFY: "Verify a phone number (yes/no answer)",
                           NV_READ: "Read the device's phone number (partners whose "
                                    "purpose justifies the raw number only)"}}}}},
        "parameters": {"x-correlator": {
            "name": "x-correlator", "in": "header", "required": False,
            "description": "Correlation id, echoed in the response",
            "schema": {"type": "string", "pattern": _CORRELATOR}}},
        "headers": {"x-correlator": {
            "description": "The request's correlation id",
            "schema": {"type": "string", "pattern": _CORRELATOR}}},
        "schemas": {
            "NumberVerificationRequestBody": {
                "type": "object",
                "description": "Exactly one of the two properties.",
                "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
                "properties": {
                    "phoneNumber": {
                        "type": "string", "pattern": _PHONE, "example": "+447400900123",
                        "description": "E.164 with the leading '+'"},
                    "hashedPhoneNumber": {
                        "type": "string", "pattern": _HASH,
                        "description": "SHA-256, hex, of the E.164 number with its '+' "
                                       "(without the '+' is accepted too)"},
                },
            },
            "NumberVerificationMatchResponse": {
                "type": "object", "required": ["devicePhoneNumberVerified"],
                "additionalProperties": False,
                "properties": {"devicePhoneNumberVerified": {"type": "boolean"}}},
            "NumberVerificationShareResponse": {
                "type": "object", "required": ["devicePhoneNumber"],
                "additionalProperties": False,
                "properties": {"devicePhoneNumber": {"type": "string", "pattern": _PHONE}}},
            "ErrorInfo": {
                "type": "object", "required": ["status", "code", "message"],
                "properties": {"status": {"type": "integer"}, "code": {"type": "string"},
                               "message": {"type": "string"}}},
        },
    },
}


def openapi_document() -> dict[str, Any]:
    return copy.deepcopy(_DOCUMENT)
