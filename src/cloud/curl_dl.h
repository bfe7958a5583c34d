#ifndef YARD_CLOUD_CURL_DL_H
#define YARD_CLOUD_CURL_DL_H

/*
 * libcurl, loaded when it is first needed (curl_dl.c). The daemon links no
 * libcurl: its curl_* calls go to the functions of curl_dl.c, which load
 * libcurl.so.4 with dlopen on the first call and forward to it. A daemon
 * that never speaks to a cloud or an object store never maps libcurl and
 * the two dozen libraries it brings (about 6.5 MiB of resident memory and
 * their relocations at every start).
 *
 * Loads it (once; later calls say the same); 0, or -ENOENT with *err set
 * (caller frees) to one line that says what to install.
 */
int cloud_curl_load(char **err);

#endif
