// kstatus prints the kstatus verdict (sigs.k8s.io/cli-utils) of Kubernetes objects
// read as JSON from stdin (one object, or a List), one line each:
//
//	<kind>/<name> <Status> <message>
//
// Flux, `kubectl wait` and kpt compute health with this library; the tests use this
// helper to check that ModelDeployment status is read the way modelplane means it.
package main

import (
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(raw); err != nil {
		fmt.Fprintln(os.Stderr, "stdin is not a Kubernetes object:", err)
		os.Exit(2)
	}
	items := []unstructured.Unstructured{*obj}
	if obj.IsList() {
		list, err := obj.ToList()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		items = list.Items
	}
	for i := range items {
		u := &items[i]
		result, err := status.Compute(u)
		if err != nil {
			fmt.Printf("%s/%s Unknown %s\n", u.GetKind(), u.GetName(), err)
			continue
		}
		fmt.Printf("%s/%s %s %s\n", u.GetKind(), u.GetName(), result.Status, result.Message)
	}
}
