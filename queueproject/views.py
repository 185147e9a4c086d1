from django.http import JsonResponse
from django.views.defaults import page_not_found


def not_found(request, exception=None):
    """Answer JSON under /api/, Django's page everywhere else."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return page_not_found(request, exception)
