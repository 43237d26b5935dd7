// SPDX-License-Identifier: MIT
//
// TestUSDC.sol - a USDC-like ERC-20 with EIP-3009 authorizations, for local test chains only.
//
// farebox settles x402 "exact" EVM payments by submitting EIP-3009 transferWithAuthorization calls
// to Circle's USDC (FiatToken v2.2). This contract reproduces the parts of that interface farebox and
// its tests touch, with the same function selectors, event signatures, EIP-712 typehashes, signature
// rules and revert strings, so a payment that settles here settles the same way against real USDC:
//
//   - ERC-20 with 6 decimals, plus an owner-only mint for funding test accounts;
//   - EIP-3009 transferWithAuthorization / receiveWithAuthorization, each in the (v, r, s) form and
//     the (bytes signature) form, cancelAuthorization (both forms) and authorizationState;
//   - EIP-712 domain {name, version, chainId, verifyingContract} with name/version chosen at deploy
//     time (Base Sepolia USDC uses "USDC" / "2"), exposed through DOMAIN_SEPARATOR() and the
//     EIP-5267 eip712Domain() getter;
//   - signature checks as in FiatToken v2.2: low-s only, v in {27, 28}, recovered signer non-zero and
//     equal to the authorizer; an authorizer that is a contract is asked via EIP-1271 instead.
//
// Not reproduced: pausing, blacklisting, minter allowances, EIP-2612 permit, upgradeability.
// The domain separator is recomputed on every call (no immutables), so the runtime code that solc
// reports is exactly the code on chain; the dev-chain launcher relies on that to recognise an
// already deployed copy.

pragma solidity ^0.8.20;

/// @dev The EIP-1271 entry point a contract wallet implements to approve a signature.
interface IERC1271 {
    function isValidSignature(bytes32 hash, bytes memory signature) external view returns (bytes4 magicValue);
}

contract TestUSDC {
    // ---------------------------------------------------------------- constants

    /// keccak256("TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)")
    bytes32 public constant TRANSFER_WITH_AUTHORIZATION_TYPEHASH = keccak256(
        "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
    );

    /// keccak256("ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)")
    bytes32 public constant RECEIVE_WITH_AUTHORIZATION_TYPEHASH = keccak256(
        "ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
    );

    /// keccak256("CancelAuthorization(address authorizer,bytes32 nonce)")
    bytes32 public constant CANCEL_AUTHORIZATION_TYPEHASH =
        keccak256("CancelAuthorization(address authorizer,bytes32 nonce)");

    bytes32 private constant EIP712_DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");

    /// Half the secp256k1 group order: signatures with s above it are malleable copies and are refused.
    uint256 private constant SECP256K1_HALF_ORDER =
        0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    /// bytes4(keccak256("isValidSignature(bytes32,bytes)")), returned by an EIP-1271 wallet that agrees.
    bytes4 private constant EIP1271_MAGIC_VALUE = 0x1626ba7e;

    string public constant symbol = "USDC";
    uint8 public constant decimals = 6;

    // ---------------------------------------------------------------- state

    string public name; // ERC-20 name, also the EIP-712 domain name
    string private _version; // EIP-712 domain version
    address public owner; // the only account allowed to mint
    uint256 public totalSupply; // sum of all balances, in atomic units (1e-6 USDC)
    mapping(address => uint256) public balanceOf; // account => atomic units held
    mapping(address => mapping(address => uint256)) public allowance; // owner => spender => units
    mapping(address => mapping(bytes32 => bool)) private _authorizationStates; // authorizer => nonce => used or canceled

    // ---------------------------------------------------------------- events

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);
    event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce);
    event AuthorizationCanceled(address indexed authorizer, bytes32 indexed nonce);
    event EIP712DomainChanged(); // EIP-5267; never emitted, the domain is fixed at deploy time

    // ---------------------------------------------------------------- construction

    /// @param name_    ERC-20 name and EIP-712 domain name ("USDC" on Base Sepolia, "USD Coin" on Base).
    /// @param version_ EIP-712 domain version ("2" for FiatToken v2.x).
    constructor(string memory name_, string memory version_) {
        name = name_;
        _version = version_;
        owner = msg.sender;
    }

    // ---------------------------------------------------------------- EIP-712 / EIP-5267

    /// @return the EIP-712 domain version given at deploy time.
    function version() external view returns (string memory) {
        return _version;
    }

    /// @return the EIP-712 domain separator for this chain and this contract address.
    function DOMAIN_SEPARATOR() public view returns (bytes32) {
        return keccak256(
            abi.encode(
                EIP712_DOMAIN_TYPEHASH,
                keccak256(bytes(name)),
                keccak256(bytes(_version)),
                block.chainid,
                address(this)
            )
        );
    }

    /// @notice EIP-5267: describes the EIP-712 domain (fields 0x0f = name, version, chainId, verifyingContract).
    function eip712Domain()
        external
        view
        returns (
            bytes1 fields,
            string memory name_,
            string memory version_,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        )
    {
        return (hex"0f", name, _version, block.chainid, address(this), bytes32(0), new uint256[](0));
    }

    // ---------------------------------------------------------------- ERC-20

    function transfer(address to, uint256 value) external returns (bool) {
        _transfer(msg.sender, to, value);
        return true;
    }

    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        require(value <= allowed, "ERC20: transfer amount exceeds allowance");
        _transfer(from, to, value);
        allowance[from][msg.sender] = allowed - value;
        return true;
    }

    function approve(address spender, uint256 value) external returns (bool) {
        require(spender != address(0), "ERC20: approve to the zero address");
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
        return true;
    }

    /// @notice Creates `amount` atomic units for `to`. Only the deployer may call it.
    function mint(address to, uint256 amount) external {
        require(msg.sender == owner, "TestUSDC: caller is not the owner");
        require(to != address(0), "FiatToken: mint to the zero address");
        totalSupply += amount;
        balanceOf[to] += amount;
        emit Transfer(address(0), to, amount);
    }

    // ---------------------------------------------------------------- EIP-3009

    /// @return true when `nonce` of `authorizer` has been used or canceled.
    function authorizationState(address authorizer, bytes32 nonce) external view returns (bool) {
        return _authorizationStates[authorizer][nonce];
    }

    /// @notice Moves `value` from `from` to `to` on the strength of `from`'s signature; anyone may submit it.
    function transferWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external {
        _transferWithAuthorization(
            TRANSFER_WITH_AUTHORIZATION_TYPEHASH, from, to, value, validAfter, validBefore, nonce,
            abi.encodePacked(r, s, v)
        );
    }

    /// @notice As above, with the signature packed as r || s || v (65 bytes), or in a contract
    ///         wallet's own EIP-1271 format when `from` is a contract.
    function transferWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes memory signature
    ) external {
        _transferWithAuthorization(
            TRANSFER_WITH_AUTHORIZATION_TYPEHASH, from, to, value, validAfter, validBefore, nonce, signature
        );
    }

    /// @notice Like transferWithAuthorization, but only the payee `to` may submit it (front-running safe).
    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external {
        require(to == msg.sender, "FiatTokenV2: caller must be the payee");
        _transferWithAuthorization(
            RECEIVE_WITH_AUTHORIZATION_TYPEHASH, from, to, value, validAfter, validBefore, nonce,
            abi.encodePacked(r, s, v)
        );
    }

    /// @notice receiveWithAuthorization with a packed (or EIP-1271) signature.
    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes memory signature
    ) external {
        require(to == msg.sender, "FiatTokenV2: caller must be the payee");
        _transferWithAuthorization(
            RECEIVE_WITH_AUTHORIZATION_TYPEHASH, from, to, value, validAfter, validBefore, nonce, signature
        );
    }

    /// @notice Burns an unused authorization nonce so it can never be used.
    function cancelAuthorization(address authorizer, bytes32 nonce, uint8 v, bytes32 r, bytes32 s) external {
        _cancelAuthorization(authorizer, nonce, abi.encodePacked(r, s, v));
    }

    /// @notice cancelAuthorization with a packed (or EIP-1271) signature.
    function cancelAuthorization(address authorizer, bytes32 nonce, bytes memory signature) external {
        _cancelAuthorization(authorizer, nonce, signature);
    }

    // ---------------------------------------------------------------- internals

    /// Checks the time window, the nonce and the signature, burns the nonce, then moves the funds
    /// (the same order as FiatToken, so AuthorizationUsed is logged before Transfer).
    function _transferWithAuthorization(
        bytes32 typehash,
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes memory signature
    ) private {
        require(block.timestamp > validAfter, "FiatTokenV2: authorization is not yet valid");
        require(block.timestamp < validBefore, "FiatTokenV2: authorization is expired");
        _requireUnusedAuthorization(from, nonce);

        bytes32 structHash = keccak256(abi.encode(typehash, from, to, value, validAfter, validBefore, nonce));
        _requireValidSignature(from, structHash, signature);

        _authorizationStates[from][nonce] = true;
        emit AuthorizationUsed(from, nonce);
        _transfer(from, to, value);
    }

    function _cancelAuthorization(address authorizer, bytes32 nonce, bytes memory signature) private {
        _requireUnusedAuthorization(authorizer, nonce);
        bytes32 structHash = keccak256(abi.encode(CANCEL_AUTHORIZATION_TYPEHASH, authorizer, nonce));
        _requireValidSignature(authorizer, structHash, signature);

        _authorizationStates[authorizer][nonce] = true;
        emit AuthorizationCanceled(authorizer, nonce);
    }

    function _requireUnusedAuthorization(address authorizer, bytes32 nonce) private view {
        require(!_authorizationStates[authorizer][nonce], "FiatTokenV2: authorization is used or canceled");
    }

    /// Reverts unless `signature` is `signer`'s signature over the EIP-712 digest of `structHash`.
    /// An externally owned signer must give a canonical 65-byte ECDSA signature; a contract signer
    /// is asked through EIP-1271.
    function _requireValidSignature(address signer, bytes32 structHash, bytes memory signature) private view {
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", DOMAIN_SEPARATOR(), structHash));
        bool valid;
        if (signer.code.length == 0) {
            valid = _recover(digest, signature) == signer;
        } else {
            (bool ok, bytes memory ret) =
                signer.staticcall(abi.encodeWithSelector(IERC1271.isValidSignature.selector, digest, signature));
            valid = ok && ret.length >= 32 && abi.decode(ret, (bytes32)) == bytes32(EIP1271_MAGIC_VALUE);
        }
        require(valid, "FiatTokenV2: invalid signature");
    }

    /// Recovers the signer of `digest` from a packed r || s || v signature. Reverts on a malformed or
    /// malleable signature and when ecrecover finds no signer, so the result is never address(0).
    function _recover(bytes32 digest, bytes memory signature) private pure returns (address) {
        require(signature.length == 65, "ECRecover: invalid signature length");
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly {
            r := mload(add(signature, 0x20))
            s := mload(add(signature, 0x40))
            v := byte(0, mload(add(signature, 0x60)))
        }
        require(uint256(s) <= SECP256K1_HALF_ORDER, "ECRecover: invalid signature 's' value");
        require(v == 27 || v == 28, "ECRecover: invalid signature 'v' value");
        address recovered = ecrecover(digest, v, r, s);
        require(recovered != address(0), "ECRecover: invalid signature");
        return recovered;
    }

    function _transfer(address from, address to, uint256 value) private {
        require(from != address(0), "ERC20: transfer from the zero address");
        require(to != address(0), "ERC20: transfer to the zero address");
        uint256 balance = balanceOf[from];
        require(value <= balance, "ERC20: transfer amount exceeds balance");
        unchecked {
            balanceOf[from] = balance - value;
        }
        balanceOf[to] += value;
        emit Transfer(from, to, value);
    }
}
