/*
 * Thin wrappers over OpenSSL EVP: random bytes, SHA-256, AES-256-GCM with a key
 * set once and a fresh nonce per message, and hex encoding.
 */
#ifndef TB_CRYPTO_H
#define TB_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define CRYPTO_KEY_LEN 32
#define CRYPTO_NONCE_LEN 12
#define CRYPTO_TAG_LEN 16
#define CRYPTO_SHA256_LEN 32

typedef struct crypto_gcm crypto_gcm;
typedef struct crypto_sha256 crypto_sha256;

int crypto_random(void *buf, size_t len, tb_error *err);

/* A GCM context bound to one key; seal/open take the nonce per message. */
crypto_gcm *crypto_gcm_new(const uint8_t key[CRYPTO_KEY_LEN], tb_error *err);
void crypto_gcm_free(crypto_gcm *gcm);

/* Encrypts len bytes of in to out (may alias) and writes the tag. */
int crypto_gcm_seal(crypto_gcm *gcm, const uint8_t nonce[CRYPTO_NONCE_LEN], const void *aad, size_t aad_len,
					const void *in, size_t len, void *out, uint8_t tag[CRYPTO_TAG_LEN], tb_error *err);

/* Decrypts and authenticates; returns 1 if authentic, 0 if not (out is then garbage), -1 on error. */
int crypto_gcm_open(crypto_gcm *gcm, const uint8_t nonce[CRYPTO_NONCE_LEN], const void *aad, size_t aad_len,
					const void *in, size_t len, void *out, const uint8_t tag[CRYPTO_TAG_LEN], tb_error *err);

crypto_sha256 *crypto_sha256_new(tb_error *err);
void crypto_sha256_update(crypto_sha256 *sha, const void *buf, size_t len);
void crypto_sha256_final(crypto_sha256 *sha, uint8_t digest[CRYPTO_SHA256_LEN]);
void crypto_sha256_free(crypto_sha256 *sha);
void crypto_sha256_once(const void *buf, size_t len, uint8_t digest[CRYPTO_SHA256_LEN]);

/* out must hold 2*len+1 characters. */
void crypto_hex_encode(const uint8_t *in, size_t len, char *out);

/* Decodes exactly len bytes from 2*len hex digits; -1 on any other input. */
int crypto_hex_decode(const char *in, uint8_t *out, size_t len);

/* Overwrites secret material in a way the compiler cannot drop. */
void crypto_wipe(void *buf, size_t len);

#endif
