from django.http import Http404


def _todo(request, *args, **kwargs):
    raise Http404


request_new = request_track = request_verify = request_resend = _todo
request_respond = request_withdraw = request_detail = _todo
