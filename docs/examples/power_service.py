# services.py
from appd import (
    SecureSocketAppService,
    SecureSocketAppClient,
)

host = "127.0.0.1"
port = 9001
key = "qwertyuiasdfghjk"
username = "PowerService"
password = "PowerService"


class PowerService(SecureSocketAppService):
    def __init__(self):
        super().__init__()

    @property
    def host(self):
        return host

    @property
    def port(self):
        return port

    @property
    def key(self):
        return key

    @property
    def username(self):
        return username

    @property
    def password(self):
        return password

    def handle_request(self, reqcmd, *args, **kwargs):
        res_args, res_kwargs = [], {}
        if reqcmd == "poweron":
            outlet = args[0]
            # TODO: power on outlet
            pass
        # ...
        return res_args, res_kwargs


class PowerClient(SecureSocketAppClient):
    def __init__(self, host, port, username, password, key):
        super().__init__(host, port, username, password, key)


powerclient = PowerClient(
    host=host, port=port, username=username, password=password, key=key
)
