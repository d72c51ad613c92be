"""The Diameter Gy/Ro front door (CONTRACT §6.3) over TCP.

    wire      framing, strict decoding and answers over python-diameter's codec
    ccr       reading a CCR, checked (pure)
    gy        a CCR as chargeflow requests and their decisions as a CCA (pure)
    sessions  what the gateways keep of a Diameter session, in Redis
    credit    answering one CCR
    door      the peers: CER/CEA, DWR/DWA, DPR/DPA, CCRs, on asyncio

Importing the package registers the door as ``diameter`` (``gateway.server.register``).
"""

from __future__ import annotations

from gateway.diameter.door import DiameterDoor
from gateway.server import register

register("diameter", DiameterDoor)

__all__ = ["DiameterDoor"]
