"""A minimal view that does what any upload form must: the ceiling.

It parses the same multipart POST through the same middleware and upload
handlers (CSRF included), saves each file to the same storage with
``default_storage.save`` and inserts one row, in one transaction.
"""

from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.middleware.csrf import get_token

TABLE = "bench_ceiling_upload"
CREATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    "id bigserial PRIMARY KEY, merchant_id varchar(15) NOT NULL, "
    "files text[] NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
)


def upload(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        with transaction.atomic():
            names = [
                default_storage.save(f"ceiling/{uploaded.name}", uploaded)
                for field in request.FILES
                for uploaded in request.FILES.getlist(field)
            ]
            with connection.cursor() as cursor:
                cursor.execute(
                    f"INSERT INTO {TABLE} (merchant_id, files) VALUES (%s, %s) "
                    "RETURNING id",
                    [request.POST.get("merchant_id", "")[:15], names],
                )
                row_id = cursor.fetchone()[0]
        return HttpResponseRedirect(f"/ceiling/upload/{row_id}/")
    # The GET only hands out the CSRF token, like the form page does.
    return HttpResponse(
        f'<input type="hidden" name="csrfmiddlewaretoken" value="{get_token(request)}">'
    )
