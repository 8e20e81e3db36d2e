"""gunicorn settings for the production web command (Procfile ``web:``).

The access log is on (stdout), written by a logger that passes every field of
the line (request line, path, query, Referer, headers) through the same
redaction as the application's own log records (``config.logging.redact``):
a tracking token opens a case, so it never reaches a log file.
"""

from gunicorn.glogging import Logger

from config.logging import RedactTrackingTokens, redact

accesslog = "-"


class RedactingLogger(Logger):
    """gunicorn's logger with tracking tokens replaced by ``[token]``."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        return {
            key: redact(value) if isinstance(value, str) else value
            for key, value in atoms.items()
        }

    def setup(self, cfg):
        super().setup(cfg)
        # gunicorn's own messages (errors with a request line) go the same way.
        self.error_log.addFilter(RedactTrackingTokens())
        self.access_log.addFilter(RedactTrackingTokens())


logger_class = RedactingLogger
