"""drf-spectacular extensions: the API key in the OpenAPI document, and links."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class APIKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "api.auth.APIKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "Api-Key <key>, from `manage.py create_api_key NAME`.",
        }


# (operation, status) → links to the operations that take the case it returns.
_CASE_OPERATIONS = ("case_retrieve", "case_verify", "case_resend_code", "case_action")
_LINK_SOURCES = {
    ("case_file", "201"): "$response.body#/reference",
    ("case_retrieve", "200"): "$response.body#/reference",
    ("case_verify", "200"): "$response.body#/reference",
    ("case_action", "200"): "$response.body#/reference",
}


def add_links(result, generator, request, public):
    """Postprocessing hook: OpenAPI links from a case to what can be done with it.

    They document the flow and let schemathesis's stateful phase chain calls.
    """
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            for status, response in operation.get("responses", {}).items():
                source = _LINK_SOURCES.get((operation.get("operationId"), status))
                if source is None:
                    continue
                response["links"] = {
                    target: {
                        "operationId": target,
                        "parameters": {"reference": source},
                    }
                    for target in _CASE_OPERATIONS
                }
    return result
