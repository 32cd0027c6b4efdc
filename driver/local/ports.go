package local

import (
	"fmt"
	"net"
	"strconv"

	bolt "go.etcd.io/bbolt"
)

// loopback is the only address local nodes are given ports on.
const loopback = "127.0.0.1"

// PortRange is the inclusive range local node ports are allocated from.
type PortRange struct {
	Min, Max int
}

// DefaultPortRange is used when Options give none.
var DefaultPortRange = PortRange{Min: 20000, Max: 29999}

// ParsePortRange parses "MIN-MAX".
func ParsePortRange(s string) (PortRange, error) {
	var r PortRange
	if _, err := fmt.Sscanf(s, "%d-%d", &r.Min, &r.Max); err != nil {
		return r, fmt.Errorf("port range %q: want MIN-MAX, such as 20000-29999", s)
	}
	return r, r.validate()
}

func (r PortRange) validate() error {
	if r.Min < 1024 || r.Max > 65535 || r.Min > r.Max {
		return fmt.Errorf("port range %d-%d: want 1024 <= MIN <= MAX <= 65535", r.Min, r.Max)
	}
	return nil
}

func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.Min, r.Max) }

// allocatePort takes a port that no node holds and that is free on 127.0.0.1
// right now, and records it for owner in the same transaction. start spreads
// allocations so that a port just released is not handed out again at once.
func allocatePort(tx *bolt.Tx, r PortRange, start int, owner []byte) (int, error) {
	ports := tx.Bucket(bucketPorts)
	size := r.Max - r.Min + 1
	for i := 0; i < size; i++ {
		port := r.Min + (start-r.Min+i+size)%size
		if ports.Get(portKey(port)) != nil || !portFree(port) {
			continue
		}
		if err := ports.Put(portKey(port), owner); err != nil {
			return 0, err
		}
		return port, nil
	}
	return 0, fmt.Errorf("no free port left in %s", r)
}

func portFree(port int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort(loopback, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}
