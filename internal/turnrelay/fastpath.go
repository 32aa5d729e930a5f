package turnrelay

// pionInboundMTU is pion's read buffer for the server's sockets (its
// default InboundMTU): pion drops a datagram of this size or more.
const pionInboundMTU = 1600
