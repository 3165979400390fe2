// Command freeport prints a TCP port that is free on the loopback interface
// (never Redis's 6379), for scripts that need to start a server on one.
package main

import (
	"fmt"
	"log"

	"github.com/cnaitoken/caddy-aitoken/internal/freeport"
)

func main() {
	port, err := freeport.Port()
	if err != nil {
		log.Fatalf("freeport: %v", err)
	}
	fmt.Println(port)
}
