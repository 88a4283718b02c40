"""Channel names: by owner, admins apart, and never shared by two Redis databases of one server."""

from control_plane.auth.principals import UserPrincipal
from control_plane.realtime.channels import Routing


def test_messages_go_to_the_admins_and_the_owner_and_each_socket_reads_one_channel() -> None:
    routing = Routing.for_redis("redis://127.0.0.1:6379/3")
    alice, admin = UserPrincipal("user_a", "user"), UserPrincipal("user_b", "admin")
    assert routing.routes("user_a") == [routing.admins, routing.channel_of(alice)]
    assert routing.channel_of(admin) == routing.admins
    assert routing.channel_of(UserPrincipal("user_c", "viewer")) not in routing.routes("user_a")


def test_two_databases_of_one_server_use_different_channels() -> None:
    # pub/sub ignores the database number, so the names must carry it
    names = {
        Routing.for_redis(url).admins for url in ("redis://h:6379/3", "redis://h:6379/4", "redis://h:6379")
    }
    assert len(names) == 3
