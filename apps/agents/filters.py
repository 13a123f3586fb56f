"""Filters for agent lists, shared by the API and the dashboard."""

import django_filters
from django.db.models import Q

from apps.agents.choices import AgentKind, AgentStatus
from apps.agents.models import Agent


class AgentFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=AgentStatus.choices)
    kind = django_filters.ChoiceFilter(choices=AgentKind.choices)
    capability = django_filters.CharFilter(method="filter_capability", max_length=100)
    label = django_filters.CharFilter(method="filter_label", max_length=300, help_text="key=value, or key")
    q = django_filters.CharFilter(method="filter_search", max_length=100, help_text="name, hostname or model")

    class Meta:
        model = Agent
        fields = ["status", "kind"]

    def filter_capability(self, queryset, name, value):
        return queryset.filter(capabilities__contains=[value])

    def filter_label(self, queryset, name, value):
        # Containment, never a lookup built from the input: `a__regex=(` is just a label name.
        key, sep, wanted = value.partition("=")
        return queryset.filter(labels__contains={key: wanted}) if sep else queryset.filter(labels__has_key=key)

    def filter_search(self, queryset, name, value):
        value = value.strip()
        return queryset.filter(Q(name__icontains=value) | Q(host__hostname__icontains=value) | Q(model__icontains=value))
