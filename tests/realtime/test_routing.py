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


def test_a_change_of_owner_goes_to_both_owners_once_and_notices_to_a_channel_of_their_own() -> None:
    routing = Routing.for_redis("redis://127.0.0.1:6379/3")
    assert routing.routes("user_new", "user_old") == [
        routing.admins,
        routing.owner("user_new"),
        routing.owner("user_old"),
    ]
    assert routing.routes("user_a", "user_a") == routing.routes("user_a")
    read = {routing.channel_of(UserPrincipal(u, r)) for u in ("user_a", "user_b") for r in ("admin", "user")}
    assert routing.control("user_a") not in read | set(routing.routes("user_a", "user_b"))
