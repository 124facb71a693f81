"""``POST /outlets/<n>/on``, ``POST /outlets/<n>/off``, ``GET /outlets/<n>``."""

from django.urls import path

from outlets import views

urlpatterns = [
    path("<int:outlet>", views.outlet_status),
    path("<int:outlet>/<str:action>", views.switch_outlet),
]
