package local

import (
	"net"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func TestParsePortRange(t *testing.T) {
	for in, ok := range map[string]bool{
		"20000-29999": true, "1024-1024": true, "30000-20000": false, "80-90": false,
		"20000-70000": false, "20000": false, "a-b": false, "": false,
	} {
		_, err := ParsePortRange(in)
		if (err == nil) != ok {
			t.Errorf("ParsePortRange(%q) error = %v, want ok=%v", in, err, ok)
		}
	}
}

// TestAllocatePortSkipsBusyPorts checks that a port some other program
// listens on, and a port a node holds, are never handed out.
func TestAllocatePortSkipsBusyPorts(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	p := busy.Addr().(*net.TCPAddr).Port
	if p+2 > 65535 {
		t.Skip("the kernel chose a port at the top of the range")
	}
	db, err := openState(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	r := PortRange{Min: p, Max: p + 2}
	var got []int
	err = db.Update(func(tx *bolt.Tx) error {
		for i := 0; i < 2; i++ {
			port, err := allocatePort(tx, r, p, []byte("c\x00n"))
			if err != nil {
				return err
			}
			got = append(got, port)
		}
		_, err := allocatePort(tx, r, p, []byte("c\x00n"))
		if err == nil || !strings.Contains(err.Error(), "no free port") {
			t.Errorf("third allocation from a range of three with one busy: %v, want no free port", err)
		}
		return nil
	})
	if err != nil {
		// A neighbour port may be taken by another program on a busy machine.
		t.Skipf("ports next to %d are not free: %v", p, err)
	}
	for _, port := range got {
		if port == p {
			t.Errorf("allocated port %d, which another program listens on", p)
		}
	}
	if got[0] == got[1] {
		t.Errorf("port %d handed out twice", got[0])
	}
}
