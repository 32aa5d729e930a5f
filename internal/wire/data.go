package wire

import (
	"encoding/binary"
	"fmt"
)

// TagLen is the size of a data frame's sender tag.
const TagLen = 8

// DataOverhead is what a direct data frame adds to its payload.
const DataOverhead = HeaderLen + TagLen

// AppendData appends a direct data frame.
func AppendData(out []byte, tag uint64, payload []byte) []byte {
	out = append(out, TypeData, Version)
	out = binary.BigEndian.AppendUint64(out, tag)
	return append(out, payload...)
}

// ParseData splits a direct data frame, or a Relayed frame (same layout).
func ParseData(b []byte) (tag uint64, payload []byte, err error) {
	t, err := Header(b)
	if err != nil {
		return 0, nil, err
	}
	if t != TypeData && t != TypeRelayed {
		return 0, nil, fmt.Errorf("%w: frame type %#x is not data", ErrMalformed, t)
	}
	if len(b) < DataOverhead {
		return 0, nil, ErrShort
	}
	return binary.BigEndian.Uint64(b[HeaderLen:]), b[DataOverhead:], nil
}
