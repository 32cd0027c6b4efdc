package local

import (
	"encoding/json"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/berthio/berth/platform"
)

// bucketIdempotency maps an Idempotency-Key to the answer of the provision
// that used it first.
var bucketIdempotency = []byte("idempotency")

type idempotencyEntry struct {
	Digest   string                     `json:"digest"`
	Response platform.ProvisionResponse `json:"response"`
	At       time.Time                  `json:"at"`
}

// HonoursIdempotencyKeys tells the server that this driver keeps keys.
func (d *Driver) HonoursIdempotencyKeys() bool { return true }

// replay returns the stored answer for a retry, nil when the key is new (or
// forgotten), and EUNPROCESSABLE when the key came with another request.
func (d *Driver) replay(idem *platform.Idempotency) (*platform.ProvisionResponse, error) {
	var entry *idempotencyEntry
	err := d.db.View(func(tx *bolt.Tx) error {
		data := tx.Bucket(bucketIdempotency).Get([]byte(idem.Key))
		if data == nil {
			return nil
		}
		entry = &idempotencyEntry{}
		return json.Unmarshal(data, entry)
	})
	if err != nil || entry == nil || time.Since(entry.At) > platform.IdempotencyWindow {
		return nil, err
	}
	if entry.Digest != idem.Digest {
		return nil, platform.Errorf(platform.EUNPROCESSABLE,
			"Idempotency-Key %q was used at %s for another provision request; use a new key for a new request",
			idem.Key, entry.At.Format(time.RFC3339))
	}
	return &entry.Response, nil
}

// remember stores a provision's answer under its key, in tx, and forgets
// keys older than the window.
func remember(tx *bolt.Tx, idem *platform.Idempotency, resp platform.ProvisionResponse) error {
	if idem == nil {
		return nil
	}
	b := tx.Bucket(bucketIdempotency)
	c := b.Cursor()
	var expired [][]byte
	for k, v := c.First(); k != nil; k, v = c.Next() {
		var e idempotencyEntry
		if json.Unmarshal(v, &e) != nil || time.Since(e.At) > platform.IdempotencyWindow {
			expired = append(expired, append([]byte(nil), k...))
		}
	}
	for _, k := range expired {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	data, err := json.Marshal(idempotencyEntry{Digest: idem.Digest, Response: resp, At: time.Now().UTC()})
	if err != nil {
		return err
	}
	return b.Put([]byte(idem.Key), data)
}
