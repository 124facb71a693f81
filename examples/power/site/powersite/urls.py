"""The site's URLs: the outlets API."""

from django.urls import include, path

urlpatterns = [
    path("outlets/", include("outlets.urls")),
]
