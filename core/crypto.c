/* OpenSSL EVP wrappers used by the stream format and the key hierarchy (see crypto.h). */
#include "crypto.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

struct crypto_gcm
{
	EVP_CIPHER_CTX *enc;
	EVP_CIPHER_CTX *dec;
};

struct crypto_sha256
{
	EVP_MD_CTX *ctx;
};

static int
crypto_openssl_error(tb_error *err, const char *what)
{
	char buf[256];

	ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
	return tb_error_set(err, TB_ERR_INTERNAL, "OpenSSL failed to %s: %s", what, buf);
}

int
crypto_random(void *buf, size_t len, tb_error *err)
{
	if (RAND_bytes(buf, (int) len) != 1)
		return crypto_openssl_error(err, "generate random bytes");
	return 0;
}

crypto_gcm *
crypto_gcm_new(const uint8_t key[CRYPTO_KEY_LEN], tb_error *err)
{
	crypto_gcm *gcm = calloc(1, sizeof(*gcm));

	if (gcm == NULL)
	{
		tb_error_set(err, TB_ERR_NOMEM, "out of memory");
		return NULL;
	}
	gcm->enc = EVP_CIPHER_CTX_new();
	gcm->dec = EVP_CIPHER_CTX_new();
	if (gcm->enc == NULL || gcm->dec == NULL || EVP_EncryptInit_ex(gcm->enc, EVP_aes_256_gcm(), NULL, key, NULL) != 1 ||
		EVP_DecryptInit_ex(gcm->dec, EVP_aes_256_gcm(), NULL, key, NULL) != 1)
	{
		crypto_openssl_error(err, "set up AES-256-GCM");
		crypto_gcm_free(gcm);
		return NULL;
	}
	return gcm;
}

void
crypto_gcm_free(crypto_gcm *gcm)
{
	if (gcm == NULL)
		return;
	EVP_CIPHER_CTX_free(gcm->enc);
	EVP_CIPHER_CTX_free(gcm->dec);
	free(gcm);
}

int
crypto_gcm_seal(crypto_gcm *gcm, const uint8_t nonce[CRYPTO_NONCE_LEN], const void *aad, size_t aad_len, const void *in,
				size_t len, void *out, uint8_t tag[CRYPTO_TAG_LEN], tb_error *err)
{
	int outl;

	if (EVP_EncryptInit_ex(gcm->enc, NULL, NULL, NULL, nonce) != 1 ||
		(aad_len > 0 && EVP_EncryptUpdate(gcm->enc, NULL, &outl, aad, (int) aad_len) != 1) ||
		(len > 0 && EVP_EncryptUpdate(gcm->enc, out, &outl, in, (int) len) != 1) ||
		EVP_EncryptFinal_ex(gcm->enc, (unsigned char *) out + len, &outl) != 1 ||
		EVP_CIPHER_CTX_ctrl(gcm->enc, EVP_CTRL_GCM_GET_TAG, CRYPTO_TAG_LEN, tag) != 1)
		return crypto_openssl_error(err, "encrypt");
	return 0;
}

int
crypto_gcm_open(crypto_gcm *gcm, const uint8_t nonce[CRYPTO_NONCE_LEN], const void *aad, size_t aad_len, const void *in,
				size_t len, void *out, const uint8_t tag[CRYPTO_TAG_LEN], tb_error *err)
{
	int outl;

	if (EVP_DecryptInit_ex(gcm->dec, NULL, NULL, NULL, nonce) != 1 ||
		(aad_len > 0 && EVP_DecryptUpdate(gcm->dec, NULL, &outl, aad, (int) aad_len) != 1) ||
		(len > 0 && EVP_DecryptUpdate(gcm->dec, out, &outl, in, (int) len) != 1) ||
		EVP_CIPHER_CTX_ctrl(gcm->dec, EVP_CTRL_GCM_SET_TAG, CRYPTO_TAG_LEN, (void *) tag) != 1)
		return crypto_openssl_error(err, "decrypt");
	/* A failed final means the tag does not match: not an OpenSSL fault. */
	if (EVP_DecryptFinal_ex(gcm->dec, (unsigned char *) out + len, &outl) != 1)
	{
		ERR_clear_error();
		return 0;
	}
	return 1;
}

crypto_sha256 *
crypto_sha256_new(tb_error *err)
{
	crypto_sha256 *sha = calloc(1, sizeof(*sha));

	if (sha == NULL || (sha->ctx = EVP_MD_CTX_new()) == NULL || EVP_DigestInit_ex(sha->ctx, EVP_sha256(), NULL) != 1)
	{
		if (sha != NULL)
			EVP_MD_CTX_free(sha->ctx);
		free(sha);
		crypto_openssl_error(err, "set up SHA-256");
		return NULL;
	}
	return sha;
}

void
crypto_sha256_update(crypto_sha256 *sha, const void *buf, size_t len)
{
	EVP_DigestUpdate(sha->ctx, buf, len);
}

void
crypto_sha256_final(crypto_sha256 *sha, uint8_t digest[CRYPTO_SHA256_LEN])
{
	unsigned int len = CRYPTO_SHA256_LEN;

	EVP_DigestFinal_ex(sha->ctx, digest, &len);
}

void
crypto_sha256_free(crypto_sha256 *sha)
{
	if (sha == NULL)
		return;
	EVP_MD_CTX_free(sha->ctx);
	free(sha);
}

void
crypto_sha256_once(const void *buf, size_t len, uint8_t digest[CRYPTO_SHA256_LEN])
{
	unsigned int out_len = CRYPTO_SHA256_LEN;

	EVP_Digest(buf, len, digest, &out_len, EVP_sha256(), NULL);
}

void
crypto_hex_encode(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++)
	{
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0xf];
	}
	out[2 * len] = '\0';
}

static int
crypto_hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int
crypto_hex_decode(const char *in, uint8_t *out, size_t len)
{
	if (strlen(in) != 2 * len)
		return -1;
	for (size_t i = 0; i < len; i++)
	{
		int hi = crypto_hex_digit(in[2 * i]);
		int lo = crypto_hex_digit(in[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t) (hi << 4 | lo);
	}
	return 0;
}

void
crypto_wipe(void *buf, size_t len)
{
	OPENSSL_cleanse(buf, len);
}
