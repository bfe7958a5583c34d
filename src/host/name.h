#ifndef YARD_HOST_NAME_H
#define YARD_HOST_NAME_H

/*
 * The name of this machine among the hosts (docs/host.md): reserved, no pod,
 * rented machine or allocation may take it, and a model without `hosts:` or
 * `pod:` runs there. The one place the word is spelled.
 */
#define HOST_LOCAL_NAME "local"

#endif
