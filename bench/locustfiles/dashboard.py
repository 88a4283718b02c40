"""Dashboard viewers on the shared admin session: poll the analytics and the agent table every 2 s.

Each analytics endpoint is its own row in the results, so one that is missing or
failing shows up there with its failures; the others are measured regardless.
"""

from locust import FastHttpUser, constant_pacing, task

from bench.locustfiles._common import request

ANALYTICS = (
    "/api/v1/analytics/spending/total?period=today",
    "/api/v1/analytics/spending/by-agent?period=today",
    "/api/v1/analytics/spending/timeseries?period=today&bucket=hour",
    "/api/v1/analytics/budget/status",
    "/api/v1/analytics/usage/requests?period=today",
)


class DashboardViewer(FastHttpUser):
    wait_time = constant_pacing(2)  # one refresh of the whole dashboard every 2 s

    @task
    def refresh(self) -> None:
        request(self, "GET", "/api/v1/agents?per_page=20&sort=-spent", name="/api/v1/agents")
        for path in ANALYTICS:
            request(self, "GET", path, name=path.partition("?")[0])
