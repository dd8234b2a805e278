"""This server's OpenAPI 3.0.3 document for CAMARA Number Verification r3.2 (API 2.1.0).

Written for this project from the published definition (camaraproject/NumberVerification,
tag r3.2, code/API_definitions/number-verification.yaml): the same paths, operation ids,
schemas, security scheme and error codes. What it adds documents operator choices that the
published text leaves to the provider ("The list of error codes in this API specification
is not exhaustive"): 429 TOO_MANY_REQUESTS (the per-client rate limit) and 503 UNAVAILABLE
(the ledger or the grant store did not answer). docs/numberverify.md lists the differences.

Served at BASE_PATH + "/openapi.json" (with this server's URLs filled in);
docs/numberverify-openapi.json is the default rendering, kept identical by a test.
"""

from __future__ import annotations

import copy
from typing import Any

from ..policy.model import NV_READ, NV_VERIFY

API_ROOT = "/number-verification"
BASE_PATH = API_ROOT + "/v2"  # r3.2, API 2.1.0: the major version is in the path
# linewarden's own earlier path: served as a deprecated alias, same behaviour as v2.
DEPRECATED_BASE_PATH = API_ROOT + "/v0"
API_VERSION = "2.1.0"
DEFAULT_API_ROOT = "http://127.0.0.1:8080"  # [web] listen's default
DEFAULT_DISCOVERY = "https://example.com/.well-known/openid-configuration"  # as published

_E164 = r"^\+[1-9][0-9]{4,14}$"
_E164_TEXT = ("A public identifier addressing a telephone subscription. In mobile networks "
              "it corresponds to the MSISDN (Mobile Station International Subscriber "
              "Directory Number). In order to be globally unique it has to be formatted in "
              "international format, according to E.164 standard, prefixed with '+'.")
_CORRELATOR_HEADER = {"x-correlator": {"$ref": "#/components/headers/x-correlator"}}


def _error_response(description: str, status: int, codes: list[str],
                    examples: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _CORRELATOR_HEADER,
        "content": {"application/json": {
            "schema": {"allOf": [
                {"$ref": "#/components/schemas/ErrorInfo"},
                {"type": "object", "properties": {"status": {"enum": [status]},
                                                  "code": {"enum": codes}}}]},
            "examples": {name: {"value": {"status": status, **value}}
                         for name, value in examples.items()}}},
    }


_RESPONSES: dict[str, Any] = {
    "Generic400": _error_response("Problem with the client request", 400,
                                  ["INVALID_ARGUMENT"], {"GENERIC_400_INVALID_ARGUMENT": {
                                      "code": "INVALID_ARGUMENT",
                                      "message": "Client specified an invalid argument, "
                                                 "request body or query param"}}),
    "Generic401": _error_response(
        "Unauthorized: a missing, unknown, expired or already used access token (each "
        "token answers exactly one call)", 401, ["UNAUTHENTICATED"],
        {"GENERIC_401_UNAUTHENTICATED": {
            "code": "UNAUTHENTICATED",
            "message": "Request not authenticated due to missing, invalid, or expired "
                       "credentials. A new authentication is required."}}),
    "PhoneNumberVerificationPermissionDenied403": _error_response(
        "Client does not have sufficient permission: the token lacks the scope, the client "
        "is no longer registered, or the subscriber does not share this with the client. "
        "NUMBER_VERIFICATION.USER_NOT_AUTHENTICATED_BY_MOBILE_NETWORK is part of the "
        "published contract but never answered here: every token this server issues comes "
        "from network-based authentication.", 403,
        ["PERMISSION_DENIED", "NUMBER_VERIFICATION.USER_NOT_AUTHENTICATED_BY_MOBILE_NETWORK"],
        {"GENERIC_403_PERMISSION_DENIED": {
            "code": "PERMISSION_DENIED",
            "message": "Client does not have sufficient permissions to perform this "
                       "action."},
         "GENERIC_403_USER_NOT_AUTHENTICATED_BY_MOBILE_NETWORK": {
            "code": "NUMBER_VERIFICATION.USER_NOT_AUTHENTICATED_BY_MOBILE_NETWORK",
            "message": "Client must authenticate via the mobile network to use this "
                       "service"}}),
    "Generic429": _error_response(
        "Operator choice: the client's rate limit ([numberverify] rate_limit calls a "
        "minute) is reached; Retry-After says when the window ends", 429,
        ["TOO_MANY_REQUESTS"], {"GENERIC_429_TOO_MANY_REQUESTS": {
            "code": "TOO_MANY_REQUESTS", "message": "Rate limit reached."}}),
    "Generic503": _error_response(
        "Operator choice: the answer could not be recorded in the disclosure ledger (so it "
        "is withheld), or the shared grant store did not answer", 503, ["UNAVAILABLE"],
        {"GENERIC_503_UNAVAILABLE": {"code": "UNAVAILABLE",
                                     "message": "Service Unavailable."}}),
}


def _operation(operation_id: str, tag: str, summary: str, description: str, scope: str,
               ok_schema: str, body: bool) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "tags": [tag], "summary": summary, "description": description,
        "operationId": operation_id,
        "parameters": [{"$ref": "#/components/parameters/x-correlator"}],
    }
    if body:
        operation["requestBody"] = {"content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/NumberVerificationRequestBody"}}}, "required": True}
    operation["responses"] = {
        "200": {"description": "OK", "headers": _CORRELATOR_HEADER,
                "content": {"application/json": {"schema": {
                    "$ref": f"#/components/schemas/{ok_schema}"}}}},
        "400": {"$ref": "#/components/responses/Generic400"},
        "401": {"$ref": "#/components/responses/Generic401"},
        "403": {"$ref": "#/components/responses/PhoneNumberVerificationPermissionDenied403"},
        "429": {"$ref": "#/components/responses/Generic429"},
        "503": {"$ref": "#/components/responses/Generic503"},
    }
    operation["security"] = [{"openId": [scope]}]
    return operation


def openapi_document(api_root: str = DEFAULT_API_ROOT,
                     discovery: str = DEFAULT_DISCOVERY) -> dict[str, Any]:
    """A fresh copy; `api_root` and `discovery` are this server's URLs when served."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Number Verification",
            "description": (
                "CAMARA Number Verification (release r3.2, API 2.1.0) as served by a "
                "linewarden gateway. Access tokens come from the OpenID Connect "
                "authorization code flow (scope `openid` required) at the issuer named by "
                "`openIdConnectUrl`; the subscriber is authenticated by the mobile network "
                "(the binding of the device's address), never by a password, and "
                "prompt=none is implied. A token lives at most 300 s and answers exactly "
                "one API call, whatever that call's outcome. `hashedPhoneNumber` is the "
                "SHA-256 (hex, either case) of the E.164 number with its '+'. Every answer "
                "is recorded in the operator's disclosure ledger before it is sent."),
            "version": API_VERSION,
            "x-camara-commonalities": 0.6,
            "license": {"name": "Apache 2.0",
                        "url": "https://www.apache.org/licenses/LICENSE-2.0.html"},
        },
        "externalDocs": {"description": "Project documentation at CAMARA",
                         "url": "https://github.com/camaraproject/NumberVerification"},
        "servers": [{"url": "{apiRoot}" + BASE_PATH, "variables": {"apiRoot": {
            "default": api_root, "description": "API root of this gateway's web listener"}}}],
        "tags": [
            {"name": "Phone number verify",
             "description": "API operation to verify a phone number received as input. It "
                            "can be received either in plain text or hashed format."},
            {"name": "Phone number share",
             "description": "API operation to return the phone number associated to the "
                            "access token."},
        ],
        "paths": {
            "/verify": {"post": _operation(
                "phoneNumberVerify", "Phone number verify",
                "Verifies if the received hashed/plain text phone number matches the phone "
                "number associated with the access token",
                "Exactly one of `phoneNumber` and `hashedPhoneNumber`; true or false for the "
                "subscriber the network authenticated when the token was issued.",
                NV_VERIFY, "NumberVerificationMatchResponse", body=True)},
            "/device-phone-number": {"get": _operation(
                "phoneNumberShare", "Phone number share",
                "Returns the phone number associated with the access token",
                "The phone number of the subscriber the network authenticated when the "
                "token was issued.",
                NV_READ, "NumberVerificationShareResponse", body=False)},
        },
        "components": {
            "securitySchemes": {"openId": {"type": "openIdConnect",
                                           "openIdConnectUrl": discovery}},
            "parameters": {"x-correlator": {
                "name": "x-correlator", "in": "header",
                "description": "Correlation id for the different services",
                "schema": {"$ref": "#/components/schemas/XCorrelator"}}},
            "headers": {"x-correlator": {
                "description": "Correlation id for the different services",
                "schema": {"$ref": "#/components/schemas/XCorrelator"}}},
            "schemas": {
                "XCorrelator": {"type": "string",
                                "pattern": "^[a-zA-Z0-9-_:;.\\/<>{}]{0,256}$",
                                "example": "b4333c46-49c0-4f62-80d7-f0ef930f1c46"},
                "NumberVerificationRequestBody": {
                    "type": "object",
                    "description": "Payload to verify the phone number.",
                    "minProperties": 1, "maxProperties": 1,
                    "properties": {
                        "phoneNumber": {"type": "string", "pattern": _E164,
                                        "example": "+123456789", "description": _E164_TEXT},
                        "hashedPhoneNumber": {
                            "description": "Hashed phone number. SHA-256 (in hexadecimal "
                                           "representation) of the mobile phone number in "
                                           "**E.164 format (starting with country code)**. "
                                           "Prefixed with '+'.",
                            "type": "string", "pattern": "^[a-fA-F0-9]{64}$",
                            "example": "32f67ab4e4312618b09cd23ed8ce41b13e095fe52b73b2e8"
                                       "da8ef49830e50dba"},
                    },
                },
                "NumberVerificationMatchResponse": {
                    "type": "object", "description": "Number verification result",
                    "required": ["devicePhoneNumberVerified"],
                    "properties": {"devicePhoneNumberVerified": {
                        "$ref": "#/components/schemas/DevicePhoneNumberVerified"}}},
                "NumberVerificationShareResponse": {
                    "type": "object", "description": "Number verification share result",
                    "required": ["devicePhoneNumber"],
                    "properties": {"devicePhoneNumber": {
                        "$ref": "#/components/schemas/DevicePhoneNumber"}}},
                "DevicePhoneNumber": {"type": "string", "pattern": _E164,
                                      "example": "+123456789", "description": _E164_TEXT},
                "DevicePhoneNumberVerified": {
                    "description": "Number verification. True, if it matches",
                    "type": "boolean"},
                "ErrorInfo": {
                    "type": "object", "required": ["status", "code", "message"],
                    "properties": {
                        "status": {"type": "integer",
                                   "description": "HTTP response status code"},
                        "code": {"type": "string",
                                 "description": "A human-readable code to describe the "
                                                "error"},
                        "message": {"type": "string",
                                    "description": "A human-readable description of what "
                                                   "the event represents"}}},
            },
            "responses": copy.deepcopy(_RESPONSES),
        },
    }
