package docker

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/berthio/berth/platform"
)

// crashAt makes d stop the goroutine that reaches step for the nth time
// (from 1), as if Berth were killed there: no rollback, no further engine
// call. It returns a channel closed once that happened.
func crashAt(d *Driver, step string, nth int) <-chan struct{} {
	crashed := make(chan struct{})
	var mu sync.Mutex
	seen := 0
	hook := func(s, _ string) {
		if s != step {
			return
		}
		mu.Lock()
		seen++
		hit := seen == nth
		mu.Unlock()
		if hit {
			close(crashed)
			runtime.Goexit()
		}
	}
	d.hook.Store(&hook)
	return crashed
}

// run calls fn in a goroutine and waits until it returns or crashes.
func run(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
}

// nodeObjects lists the engine's containers (with their state), volumes
// and markers of one node.
func (f *fixture) nodeObjects(t *testing.T, cluster, nodeID string) []string {
	t.Helper()
	ctx := context.Background()
	filters := client.Filters{}.Add("label", LabelCluster+"="+cluster, LabelNode+"="+nodeID)
	containers, err := f.api.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: filters})
	if err != nil {
		t.Fatal(err)
	}
	volumes, err := f.api.VolumeList(ctx, client.VolumeListOptions{Filters: filters})
	if err != nil {
		t.Fatal(err)
	}
	var objects []string
	for _, c := range containers.Items {
		objects = append(objects, fmt.Sprintf("container %s (%s)", c.Labels[LabelContainer], c.State))
	}
	for _, v := range volumes.Items {
		objects = append(objects, "volume "+v.Name)
	}
	slices.Sort(objects)
	return objects
}

const testStaleAfter = time.Second

// TestCrashDuringProvision stops a provision of a two-container node at
// each step, as a SIGKILL would, and opens a new driver on the engine (the
// restarted Berth): the node is never discovered until it is complete; a
// node whose containers all started stays, loses its marker and is
// discovered; anything less is removed, volume, marker and network, once
// the marker expires.
func TestCrashDuringProvision(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := context.Background()
	for _, tc := range []struct {
		step string
		nth  int
		kept bool
		// what the engine holds right after the crash
		objects []string
	}{
		{step: stepNetwork, nth: 1},
		{step: stepMarked, nth: 1, objects: []string{"volume %s.provision"}},
		{step: stepVolume, nth: 1, objects: []string{"volume %s", "volume %s.provision"}},
		{step: stepContainerCreated, nth: 1, objects: []string{"container redis (created)", "volume %s", "volume %s.provision"}},
		{step: stepContainerCreated, nth: 2, objects: []string{"container agent (created)", "container redis (created)", "volume %s", "volume %s.provision"}},
		{step: stepContainerStarted, nth: 1, objects: []string{"container agent (created)", "container redis (running)", "volume %s", "volume %s.provision"}},
		{step: stepStarted, nth: 1, kept: true, objects: []string{"container agent (running)", "container redis (running)", "volume %s", "volume %s.provision"}},
	} {
		t.Run(fmt.Sprintf("%s-%d", tc.step, tc.nth), func(t *testing.T) {
			cluster := uniqueCluster("crash")
			crashed := openDriver(t, f.engine, Options{StaleAfter: testStaleAfter})
			done := crashAt(crashed, tc.step, tc.nth)
			run(func() {
				crashed.Provision(ctx, provisionRequest(cluster, "redis", "7.0", "default", 1, 1, map[string]any{"sidecar": true}))
				t.Error("the provision returned; it was to crash")
			})
			<-done
			crashed.Close()

			var nodeID string
			for _, object := range f.leftovers(t, cluster) {
				if rest, ok := strings.CutPrefix(object, "volume berth-"+cluster+"-"); ok {
					nodeID, _, _ = strings.Cut(rest, ".")
				}
			}
			got := []string{}
			if nodeID != "" {
				got = f.nodeObjects(t, cluster, nodeID)
			}
			var want []string
			for _, o := range tc.objects {
				want = append(want, strings.ReplaceAll(o, "%s", volumeName(cluster, nodeID)))
			}
			if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
				t.Fatalf("after the crash the node has %v, want %v", got, want)
			}

			restarted := openDriver(t, f.engine, Options{StaleAfter: testStaleAfter})
			listed := f.discoverWith(t, restarted, cluster)
			if tc.kept != (len(listed) == 1) {
				t.Fatalf("after the crash, discovery lists %+v", listed)
			}
			eventually(t, 20*time.Second, "the sweep", func() error {
				if listed := f.discoverWith(t, restarted, cluster); tc.kept != (len(listed) == 1) {
					return fmt.Errorf("discovery lists %+v", listed)
				}
				left := f.leftovers(t, cluster)
				if tc.kept {
					want := []string{"container berth-" + cluster + "-" + nodeID + "-agent", "container berth-" + cluster + "-" + nodeID + "-redis",
						"network berth-" + cluster, "volume " + volumeName(cluster, nodeID)}
					slices.Sort(left)
					if !slices.Equal(left, want) {
						return fmt.Errorf("the engine has %v, want %v", left, want)
					}
					return nil
				}
				if len(left) != 0 {
					return fmt.Errorf("the engine still has %v", left)
				}
				return nil
			})
			if tc.kept {
				waitPong(t, f.discoverWith(t, restarted, cluster)[0].Addresses["store"])
				if err := restarted.Deprovision(ctx, platform.DeprovisionRequest{ClusterID: cluster, NodeID: nodeID}); err != nil {
					t.Fatal(err)
				}
				if left := f.leftovers(t, cluster); len(left) != 0 {
					t.Errorf("left behind: %v", left)
				}
			}
		})
	}
}

func (f *fixture) discoverWith(t *testing.T, d *Driver, cluster string) []platform.DiscoveredNode {
	t.Helper()
	resp, err := d.Discover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range resp.Clusters {
		if c.ClusterID == cluster {
			return c.Nodes
		}
	}
	return nil
}

// TestCrashDuringDeprovision stops a deprovision of a two-container node
// at each step, as a SIGKILL would, and opens a new driver on the engine:
// the node is listed or gone, and either deprovisioning it again or the
// sweep, once the deprovision's marker expires, finishes the job.
func TestCrashDuringDeprovision(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := context.Background()
	for _, tc := range []struct {
		step   string
		nth    int
		listed bool
	}{
		{step: stepDeprovisionMark, nth: 1, listed: true},
		{step: stepStopped, nth: 1, listed: true},
		{step: stepContainerRemoved, nth: 1, listed: true},
		{step: stepContainerRemoved, nth: 2, listed: false},
		{step: stepVolumeRemoved, nth: 1, listed: false},
	} {
		for _, again := range []bool{true, false} {
			name := fmt.Sprintf("%s-%d/sweep", tc.step, tc.nth)
			if again {
				name = fmt.Sprintf("%s-%d/again", tc.step, tc.nth)
			}
			t.Run(name, func(t *testing.T) {
				cluster := uniqueCluster("crash")
				crashed := openDriver(t, f.engine, Options{StaleAfter: testStaleAfter, GracePeriod: time.Second})
				resp, err := crashed.Provision(ctx, provisionRequest(cluster, "redis", "7.0", "default", 1, 1, map[string]any{"sidecar": true}))
				if err != nil {
					t.Fatal(err)
				}
				nodeID := resp.NodeIDs[0]
				done := crashAt(crashed, tc.step, tc.nth)
				run(func() {
					crashed.Deprovision(ctx, platform.DeprovisionRequest{ClusterID: cluster, NodeID: nodeID})
					t.Error("the deprovision returned; it was to crash")
				})
				<-done
				crashed.Close()
				t.Logf("after the crash: %v", f.nodeObjects(t, cluster, nodeID))

				restarted := openDriver(t, f.engine, Options{StaleAfter: testStaleAfter, GracePeriod: time.Second})
				listed := f.discoverWith(t, restarted, cluster)
				if tc.listed != (len(listed) == 1) {
					t.Fatalf("after the crash, discovery lists %+v", listed)
				}
				if again {
					if err := restarted.Deprovision(ctx, platform.DeprovisionRequest{ClusterID: cluster, NodeID: nodeID}); err != nil {
						t.Fatalf("deprovisioning again: %v", err)
					}
					if left := f.leftovers(t, cluster); len(left) != 0 {
						t.Fatalf("left behind: %v", left)
					}
					err := restarted.Deprovision(ctx, platform.DeprovisionRequest{ClusterID: cluster, NodeID: nodeID})
					if platform.ErrorCode(err) != platform.ENOTFOUND {
						t.Errorf("a third deprovision: %v; want not found", err)
					}
					return
				}
				eventually(t, 20*time.Second, "the sweep", func() error {
					if left := f.leftovers(t, cluster); len(left) != 0 {
						return fmt.Errorf("the engine still has %v", left)
					}
					return nil
				})
			})
		}
	}
}

// TestCrashKeepsKeptData: a deprovision with KeepData interrupted after
// the containers are gone is finished by the sweep without removing the
// volume, the sweep never touches a kept volume, and deprovisioning again
// a node whose KeepData deprovision was interrupted keeps its volume too.
func TestCrashKeepsKeptData(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := context.Background()
	cluster := uniqueCluster("keep")
	crashed := openDriver(t, f.engine, Options{StaleAfter: testStaleAfter, GracePeriod: time.Second, KeepData: true})
	resp, err := crashed.Provision(ctx, provisionRequest(cluster, "redis", "7.0", "default", 1, 1, map[string]any{"sidecar": true}))
	if err != nil {
		t.Fatal(err)
	}
	nodeID := resp.NodeIDs[0]
	done := crashAt(crashed, stepContainerRemoved, 2)
	run(func() { crashed.Deprovision(ctx, platform.DeprovisionRequest{ClusterID: cluster, NodeID: nodeID}) })
	<-done
	crashed.Close()
	// A Berth that does not keep data finishes the job as the first meant.
	restarted := openDriver(t, f.engine, Options{StaleAfter: testStaleAfter, GracePeriod: time.Second})
	want := []string{"volume " + volumeName(cluster, nodeID)}
	eventually(t, 20*time.Second, "the sweep", func() error {
		if left := f.leftovers(t, cluster); !slices.Equal(left, want) {
			return fmt.Errorf("the engine has %v, want %v", left, want)
		}
		return nil
	})
	// Another sweep, long after, leaves the kept volume alone.
	restarted.sweep(ctx)
	if left := f.leftovers(t, cluster); !slices.Equal(left, want) {
		t.Fatalf("the engine has %v, want %v", left, want)
	}
	if _, err := f.api.VolumeRemove(ctx, volumeName(cluster, nodeID), client.VolumeRemoveOptions{}); err != nil {
		t.Fatal(err)
	}

	// Interrupted once its containers stopped, and deprovisioned again by
	// a Berth that does not keep data: the volume is kept all the same.
	crashed = openDriver(t, f.engine, Options{StaleAfter: time.Minute, GracePeriod: time.Second, KeepData: true})
	resp, err = crashed.Provision(ctx, provisionRequest(cluster, "redis", "7.0", "default", 1, 1, map[string]any{"sidecar": true}))
	if err != nil {
		t.Fatal(err)
	}
	nodeID = resp.NodeIDs[0]
	done = crashAt(crashed, stepStopped, 1)
	run(func() { crashed.Deprovision(ctx, platform.DeprovisionRequest{ClusterID: cluster, NodeID: nodeID}) })
	<-done
	crashed.Close()
	if listed := f.discoverWith(t, restarted, cluster); len(listed) != 1 {
		t.Fatalf("after the crash, discovery lists %+v", listed)
	}
	if err := restarted.Deprovision(ctx, platform.DeprovisionRequest{ClusterID: cluster, NodeID: nodeID}); err != nil {
		t.Fatal(err)
	}
	want = []string{"volume " + volumeName(cluster, nodeID)}
	if left := f.leftovers(t, cluster); !slices.Equal(left, want) {
		t.Fatalf("the engine has %v, want %v", left, want)
	}
	if _, err := f.api.VolumeRemove(ctx, volumeName(cluster, nodeID), client.VolumeRemoveOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestIncompleteNodeWithoutMarker: a node whose container was never started
// and that has no marker (made by hand, or by an older Berth) is not
// discovered, is given a marker, and is removed once it expires.
func TestIncompleteNodeWithoutMarker(t *testing.T) {
	f := newFixture(t, Options{StaleAfter: testStaleAfter})
	ctx := context.Background()
	cluster := uniqueCluster("unmarked")
	crashed := openDriver(t, f.engine, Options{StaleAfter: testStaleAfter})
	done := crashAt(crashed, stepContainerCreated, 1)
	run(func() {
		crashed.Provision(ctx, provisionRequest(cluster, "sleeper", "1.0", "default", 1, 1, nil))
	})
	<-done
	crashed.Close()
	var nodeID string
	for _, object := range f.leftovers(t, cluster) {
		if rest, ok := strings.CutPrefix(object, "volume berth-"+cluster+"-"); ok {
			if id, marker := strings.CutSuffix(rest, ".provision"); marker {
				nodeID = id
			}
		}
	}
	if _, err := f.api.VolumeRemove(ctx, markerName(cluster, nodeID, MarkerProvision), client.VolumeRemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	if listed := f.discoverWith(t, f.driver, cluster); len(listed) != 0 {
		t.Fatalf("discovery lists %+v", listed)
	}
	eventually(t, 20*time.Second, "the sweep", func() error {
		if left := f.leftovers(t, cluster); len(left) != 0 {
			return fmt.Errorf("the engine still has %v", left)
		}
		return nil
	})
}
