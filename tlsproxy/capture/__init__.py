"""Capture files as a front end: pcap/pcapng records -> TCP segments -> reassembled streams.

``pcap`` reads the file formats (sans-IO ``CaptureReader`` plus the ``iter_packets`` file helper),
``packets`` decodes link/IP/TCP headers, ``tcp`` reassembles per-connection, per-direction byte
streams that the wire core can be fed with, exactly like the relay feeds it live bytes.
"""

from tlsproxy.capture.packets import PacketDecoder, TcpSegment
from tlsproxy.capture.pcap import CaptureFormatError, CaptureReader, RawPacket, iter_packets
from tlsproxy.capture.tcp import (
    ConnectionFinished,
    ConnectionOpened,
    ConnKey,
    StreamClosed,
    StreamConflict,
    StreamData,
    StreamEvent,
    StreamGap,
    TcpReassembler,
)

__all__ = [
    "CaptureFormatError", "CaptureReader", "RawPacket", "iter_packets",
    "PacketDecoder", "TcpSegment",
    "TcpReassembler", "ConnKey", "StreamEvent", "ConnectionOpened", "StreamData", "StreamGap",
    "StreamConflict", "StreamClosed", "ConnectionFinished",
]
