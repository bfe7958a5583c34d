#ifndef YARD_CLOUD_CKSTORE_H
#define YARD_CLOUD_CKSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "cloud/s3.h"

/*
 * The checkpoint store (docs/checkpoint.md): CRIU images directories kept in
 * an S3 bucket, one generation per dump, under
 *   PREFIX MODEL/GENERATION/FILE            each image file, x-amz-meta-sha256 set
 *   PREFIX MODEL/GENERATION/manifest.json   the file list, written last
 * A generation without its manifest is incomplete: never restored, resumed
 * by a retry of the same upload (files whose object has the same size and
 * checksum are skipped), deleted once a newer one is complete. Blocking: the
 * `yard checkpoint-store` child runs it.
 */

#define CKSTORE_MANIFEST "manifest.json"
/*
 * Written by the daemon beside the images of a dump: "launch HEX" (the
 * SHA-256 of the launch the dumped engine was started with, as
 * sup__ckpt_identity makes it), "port N", "key HEX|-" (the engine's key). Its
 * launch goes into the manifest, so a daemon without a record of the
 * checkpoint can tell whether it belongs to the model as configured now.
 */
#define CKSTORE_LAUNCH_FILE "yard-launch"
/*
 * The daemon's note of an upload under way in an images directory: the
 * generation's name. Never part of a generation (an upload skips it); a
 * daemon that finds it beside images it adopts resumes that upload.
 */
#define CKSTORE_UPLOAD_FILE "yard-upload"
#define CKSTORE_PART_SIZE_DEFAULT (16ll << 20)
#define CKSTORE_PART_SIZE_MIN (5ll << 20) /* S3's smallest part but the last */
#define CKSTORE_PARTS_MAX 10000           /* S3's most parts of one upload */
/* A file over this many parts' worth goes up in parts; smaller ones in one PUT. */
#define CKSTORE_MULTIPART_PARTS 4
#define CKSTORE_FILES_MAX 100000

/* What the results mean to the daemon (the child's exit status says it). */
enum ckstore_outcome {
    CKSTORE_OK = 0,
    CKSTORE_REFUSED =
        1, /* the store said no (credentials, bucket, permissions): retry won't help */
    CKSTORE_TRANSIENT = 2, /* no answer, 5xx, 429, a broken connection: a retry may help */
    CKSTORE_NONE = 3,      /* no complete generation of the model in the store */
    CKSTORE_CORRUPT = 4,   /* what came back fails its checksum or its manifest is unreadable */
    CKSTORE_LOCAL = 5,     /* this machine's side: reading the images, writing the download */
    CKSTORE_OTHER = 6,     /* the newest generation is of another launch than the one asked for */
};

struct ckstore_file {
    char *name;
    int64_t size;
    char sha[65];
};

struct ckstore_manifest {
    char *model;
    char *generation;
    char *launch; /* NULL, or the 64 hex digits of CKSTORE_LAUNCH_FILE's launch line */
    struct ckstore_file *files;
    size_t n;
};

void ckstore_manifest_release(struct ckstore_manifest *m);
/* The manifest as JSON text; a new string, never NULL. */
char *ckstore_manifest_json(const struct ckstore_manifest *m);
/*
 * Reads a manifest strictly (untrusted bytes): version 1, model, generation,
 * files [{name, size, sha256}] with names that ckstore_valid_name accepts,
 * no name twice, sizes >= 0, 64 lowercase hex digits; launch, when there, 64
 * lowercase hex digits too. 0, or -EPROTO with
 * *err a new one-line message.
 */
int ckstore_manifest_parse(const char *text, size_t len, struct ckstore_manifest *m, char **err);

/* 1 when name can be a file of a generation: 1-255 bytes of A-Z a-z 0-9 . _ - # and not . or ..*/
int ckstore_valid_name(const char *name);
/* 1 when s is a generation's name as ckstore_generation_name makes them. */
int ckstore_valid_generation(const char *s);
/* "YYYYMMDDTHHMMSS.mmmZ" of wall_ms: names sort as their times do. */
void ckstore_generation_name(int64_t wall_ms, char out[32]);
/* PREFIX MODEL/GEN/FILE (file NULL: PREFIX MODEL/GEN/; gen NULL: PREFIX MODEL/). A new string. */
char *ckstore_key(const char *prefix, const char *model, const char *gen, const char *file);
/*
 * The generation and file of a key listed under PREFIX MODEL/: 0 with gen and
 * file filled (NUL-terminated), -EINVAL for a key of another shape.
 */
int ckstore_split_key(const char *prefix, const char *model, const char *key, char *gen,
                      size_t gen_size, char *file, size_t file_size);

struct ckstore {
    struct s3_conf s3;
    const char *prefix; /* "" or ends with '/' */
    const char *model;  /* the images' name: MODEL, or MODEL#R for replica R > 0 */
    int keep;           /* complete generations kept */
    int64_t part_size;
};

/*
 * The launch line of dir's CKSTORE_LAUNCH_FILE in out: 0, -ENOENT when there
 * is no such file, -EPROTO when it holds no valid launch line.
 */
int ckstore_read_launch(const char *dir, char out[65]);

/*
 * Uploads the files of dir (but skip, a name or NULL) as generation gen, the
 * manifest last, then deletes what is older than the newest `keep` complete
 * generations. The manifest carries the launch of dir's CKSTORE_LAUNCH_FILE
 * when there is one. *note gets a new line for the log ("12 files, 3.1 MiB (2
 * already there) in 410 ms"); failures a new one-line *err. Returns an enum
 * ckstore_outcome.
 */
int ckstore_upload(const struct ckstore *s, const char *gen, const char *dir, const char *skip,
                   char **note, char **err);
/*
 * Downloads the newest complete generation into dir, which must not hold
 * images (it is replaced; an empty or partial one is removed): the files go
 * to DIR.download first, are checked against the manifest's sizes and
 * checksums, and only then renamed to dir. Anything that fails leaves dir as
 * it was. With launch (64 hex digits, or NULL), a generation whose manifest
 * carries another launch, or none, is not downloaded: CKSTORE_OTHER. *note
 * and *err as for ckstore_upload. Returns an enum ckstore_outcome.
 */
int ckstore_download(const struct ckstore *s, const char *dir, const char *launch, char **note,
                     char **err);

/*
 * The SHA-256 of the file at path, in hex, and its size. 0 or -errno. Reads
 * it in 1 MiB blocks.
 */
int ckstore_file_sha(const char *path, char sha[65], int64_t *size);

#endif
