package streamrelay

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"sync"

	"github.com/keymesh/keymesh/internal/streamclient"
)

// bufPool holds the buffers datagrams from a presence socket pass through
// on their way into a tunnel: an idle tunnel holds none.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, streamclient.AddrLen+streamclient.MaxPayload+1)
	return &b
}}

func getBuf() *[]byte  { return bufPool.Get().(*[]byte) }
func putBuf(b *[]byte) { bufPool.Put(b) }

// Sizes of the buffered reader and writer a tunnel's WebSocket keeps for
// its life, in place of net/http's 4 KiB each: the reader only holds
// frame headers (a payload larger than it is read straight into the
// message), the writer one frame with the largest datagram, so that a
// datagram leaves in one TLS record.
const (
	wsReadBuf  = 256
	wsWriteBuf = 16 + streamclient.AddrLen + streamclient.MaxPayload
)

// smallHijack hands the WebSocket library a connection with small buffers
// when it hijacks: net/http's own (4 KiB each) go back with its connection
// once ServeHTTP returns.
type smallHijack struct {
	http.ResponseWriter
}

// Hijack implements http.Hijacker: it flushes what net/http buffered for
// the client (the 101 response) and keeps what it buffered from the
// client (bytes sent right after the request).
func (h *smallHijack) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, http.ErrNotSupported
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	if err := brw.Writer.Flush(); err != nil {
		c.Close()
		return nil, nil, err
	}
	br := bufio.NewReaderSize(c, wsReadBuf)
	if n := brw.Reader.Buffered(); n > 0 {
		// The bytes go into the new reader's own buffer: the WebSocket
		// library keeps what is buffered there and replaces its source.
		early, _ := brw.Reader.Peek(n)
		br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(early)), c), max(wsReadBuf, n))
		if _, err := br.Peek(n); err != nil {
			c.Close()
			return nil, nil, err
		}
	}
	return c, bufio.NewReadWriter(br, bufio.NewWriterSize(c, wsWriteBuf)), nil
}
