from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation


class JsonWhateverTheAccept(DefaultContentNegotiation):
    """Answer in the view's first format when the Accept header asks for none it has.

    The API speaks JSON only, so a client that asks for something else (or
    sends an Accept header that is no media type at all) learns more from
    the JSON answer than from a 406.
    """

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            renderer = renderers[0]
            return renderer, renderer.media_type
