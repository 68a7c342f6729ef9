from django.urls import path

from mcsite import views

urlpatterns = [
    path("items/", views.items),
    path("workers/", views.workers),
]
